#!/usr/bin/env bash
# Benchmark topology for scripts/bench.sh: a generator, a director and a sink in
# network namespaces, joined by veth pairs without bridges.
#
# Usage: scripts/bench-topo.sh up [--queues N] [--gen-cpu C] [--dir-cpu C]
#        scripts/bench-topo.sh down
#        scripts/bench-topo.sh status
#
# Names (P = $XVS_BENCH_PREFIX, default "xb"; MACs follow harness.sh: 02:00 +
# the four octets of an IPv4 address, also for servers that do not exist):
#
#   P-gen   g0    02:00:0a:00:00:01, no address. The generator sends out of g0
#                 (BPF_PROG_RUN live frames, XDP_TX); the sink on g0 counts and
#                 drops what comes back: DR and TUN frames for the real
#                 servers, reflected frames, kernel-forwarded frames.
#   P-dir   eth0  10.0.0.12/24 + VIP 10.0.0.88/32, 02:00:0a:00:00:0c (peer g0)
#           eth1  192.168.80.1/24, 02:00:c0:a8:50:01 (peer s0): the inside arm
#                 of two-armed NAT
#   P-sink  s0    02:00:c0:a8:50:fe, no address; the sink counts NAT frames
#
# Real servers are not namespaces: the director has permanent neighbour
# entries for them, so forwarded frames go out to g0 (or s0) where the sink
# counts them per destination MAC:
#   DR  10.0.0.21-24     on eth0 (MACs 02:00:0a:00:00:15..18)
#   TUN 10.0.0.31-34     on eth0 (MACs 02:00:0a:00:00:1f..22)
#   NAT 192.168.80.10-13 on eth1 (MACs 02:00:c0:a8:50:0a..0d)
#
# No bridge: a bridge costs CPU of its own, and frames XDP_TX'd or
# redirected into a veth are dropped unless the receiving peer runs XDP or
# GRO. GRO is on for every veth end here, so each one has its NAPI
# instances from the start (also when xvsd is stopped and the kernel
# forwards, for the nftables reference), and they survive XDP attach and
# detach. Threaded NAPI is on for every end, and the kthreads are pinned:
# the director's (eth0, eth1) to --dir-cpu (default 0), the generator's
# and sink's (g0, s0) to --gen-cpu (default 1); the generator itself and
# xvsd's worker are pinned by bench.sh and xvsd. The sink-side kthreads (g0,
# s0) run SCHED_FIFO so that the sink never drops for want of CPU. Without
# threaded NAPI, veth
# runs a receiver's NAPI on the sender's CPU, so the director's receive
# work would be billed to the generator's core.
#
# --queues N (default 1): N RX/TX queues on eth0/g0 and eth1/s0, one NAPI
# kthread each; queue q's kthreads (director and generator side) are pinned
# to CPU q mod nproc (a veth delivers XDP_TX frames sent from CPU c to the
# peer's queue c mod N, so a generator thread on CPU q feeds queue q).
#
# State: /run/xvs-bench/P/topology (sourceable: names, MACs, addresses,
# NAPI kthread pids). `up` removes what an earlier run with the same prefix
# left; `down` always succeeds and also stops any process left in the
# namespaces (xvsd, generators).
#
# Environment:
#   XVS_BENCH_PREFIX  namespace prefix (default xb)
#   XVS_BENCH_BIN     xvs-bench binary (default target/release/xvs-bench,
#                     else target/debug/xvs-bench)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib-ns.sh
. "$ROOT/scripts/lib-ns.sh"
P=${XVS_BENCH_PREFIX:-xb}
STATE_BASE=/run/xvs-bench
STATE=$STATE_BASE/$P

DIR_IP=10.0.0.12
VIP=10.0.0.88
DIR_INT_IP=192.168.80.1
GEN_MAC=02:00:0a:00:00:01
SINK_MAC=02:00:c0:a8:50:fe
DR_RIPS=(10.0.0.21 10.0.0.22 10.0.0.23 10.0.0.24)
TUN_RIPS=(10.0.0.31 10.0.0.32 10.0.0.33 10.0.0.34)
NAT_RIPS=(192.168.80.10 192.168.80.11 192.168.80.12 192.168.80.13)

usage() {
    cat >&2 <<EOF
usage: $0 up [--queues N] [--gen-cpu C] [--dir-cpu C]
       $0 down
       $0 status
  Builds (up), removes (down) or shows (status) the benchmark topology:
  ${P}-gen (g0) <-> ${P}-dir (eth0 | eth1) <-> ${P}-sink (s0); see the
  header of this script. env XVS_BENCH_PREFIX (now: $P), XVS_BENCH_BIN.
EOF
}

die() {
    echo "bench-topo.sh: error: $*" >&2
    exit 1
}

log() { echo "bench-topo.sh[$P]: $*" >&2; }

bench_bin() {
    if [[ -n ${XVS_BENCH_BIN:-} ]]; then
        echo "$XVS_BENCH_BIN"
    elif [[ -x $ROOT/target/release/xvs-bench ]]; then
        echo "$ROOT/target/release/xvs-bench"
    else
        echo "$ROOT/target/debug/xvs-bench"
    fi
}

our_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${P}-(gen|dir|sink)\$" || true
}

do_down() {
    set +e
    local ns pids
    for ns in $(our_namespaces); do
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        kill_pids "${pids[@]}"
    done
    for ns in $(our_namespaces); do
        ip netns del "$ns" 2>/dev/null || log "warning: could not delete namespace $ns"
    done
    rm -rf "$STATE"
    set -e
    return 0
}

new_ns() {
    local ns=$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# veth $2 in namespace $1 <-> $4 in namespace $3, $5 queues, MACs $6 and $7.
add_veth() {
    local ns1=$1 if1=$2 ns2=$3 if2=$4 q=$5 mac1=$6 mac2=$7
    ip -n "$ns1" link add "$if1" numrxqueues "$q" numtxqueues "$q" address "$mac1" type veth \
        peer name "$if2" netns "$ns2" numrxqueues "$q" numtxqueues "$q" address "$mac2"
}

# Up, GRO on (NAPI instances exist without XDP), threaded NAPI on. GRO is
# switched on after the link is up: veth re-evaluates its peer's XDP features
# (whether XDP_TX/redirect into it may be used) when GRO changes on a
# running device; switched on before `up`, the peer keeps refusing them.
napi_setup() {
    local ns=$1 ifname=$2
    ip -n "$ns" link set "$ifname" up
    nsx "$ns" ethtool -K "$ifname" gro on >/dev/null
    nsx "$ns" sh -c "echo 1 > /sys/class/net/$ifname/threaded" ||
        die "$ns:$ifname: cannot enable threaded NAPI"
}

# Pins the NAPI kthreads of $1 (NS:IF): queue q to CPU number q of the list
# $2 (one CPU: all queues); more arguments go to xvs-bench napi.
napi_pin() {
    local at=$1 cpus=$2
    shift 2
    "$(bench_bin)" napi "$at" --pin "$cpus" "$@" >>"$STATE/napi" ||
        die "$at: could not find or pin the NAPI kthreads"
}

do_up() {
    local queues=1 gen_cpu=1 dir_cpu=0 ncpu
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --queues) [[ $# -ge 2 ]] || { usage; exit 2; }; queues=$2; shift 2 ;;
            --gen-cpu) [[ $# -ge 2 ]] || { usage; exit 2; }; gen_cpu=$2; shift 2 ;;
            --dir-cpu) [[ $# -ge 2 ]] || { usage; exit 2; }; dir_cpu=$2; shift 2 ;;
            -h | --help) usage; exit 0 ;;
            *) usage; exit 2 ;;
        esac
    done
    ncpu=$(nproc)
    [[ $queues =~ ^[0-9]+$ ]] && ((queues >= 1 && queues <= 64)) || die "--queues must be 1..64"
    [[ $gen_cpu =~ ^[0-9]+$ ]] && ((gen_cpu < ncpu)) || die "--gen-cpu must be 0..$((ncpu - 1))"
    [[ $dir_cpu =~ ^[0-9]+$ ]] && ((dir_cpu < ncpu)) || die "--dir-cpu must be 0..$((ncpu - 1))"
    local tool
    for tool in ip ethtool sysctl; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/deps.sh)"
    done
    [[ -x $(bench_bin) ]] || die "$(bench_bin) not found: cargo build --release -p xvs-bench"

    do_down
    mkdir -p "$STATE"
    UP_DONE=0
    trap 'if [[ $UP_DONE != 1 ]]; then log "up failed; tearing down"; do_down; fi' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    new_ns "$P-gen"
    new_ns "$P-dir"
    new_ns "$P-sink"
    add_veth "$P-gen" g0 "$P-dir" eth0 "$queues" "$GEN_MAC" "$(mac_for "$DIR_IP")"
    add_veth "$P-sink" s0 "$P-dir" eth1 "$queues" "$SINK_MAC" "$(mac_for "$DIR_INT_IP")"

    # Director: addresses, no forwarding by default (bench.sh turns it on for the
    # nftables reference only), no reverse-path filter (generated sources have no
    # route back), no ICMP redirects (kernel forwarding goes out where it came in).
    local d=$P-dir key
    nsx "$d" sysctl -qw net.ipv4.ip_forward=0
    for key in all default; do
        nsx "$d" sysctl -qw "net.ipv4.conf.$key.rp_filter=0" "net.ipv4.conf.$key.send_redirects=0"
    done
    nsx "$d" ip addr add "$DIR_IP/24" dev eth0
    nsx "$d" ip addr add "$VIP/32" dev eth0
    nsx "$d" ip addr add "$DIR_INT_IP/24" dev eth1
    for ifname in eth0 eth1; do
        nsx "$d" sysctl -qw "net.ipv4.conf.$ifname.rp_filter=0" "net.ipv4.conf.$ifname.send_redirects=0"
    done

    napi_setup "$P-gen" g0
    napi_setup "$P-sink" s0
    napi_setup "$d" eth0
    napi_setup "$d" eth1

    local rip
    for rip in "${DR_RIPS[@]}" "${TUN_RIPS[@]}"; do
        nsx "$d" ip neigh replace "$rip" lladdr "$(mac_for "$rip")" dev eth0 nud permanent
    done
    for rip in "${NAT_RIPS[@]}"; do
        nsx "$d" ip neigh replace "$rip" lladdr "$(mac_for "$rip")" dev eth1 nud permanent
    done

    # Sinks (drop) where forwarded frames arrive.
    "$(bench_bin)" sink attach "$P-gen:g0" >/dev/null || die "attaching the sink to $P-gen:g0"
    "$(bench_bin)" sink attach "$P-sink:s0" >/dev/null || die "attaching the sink to $P-sink:s0"

    # NAPI kthreads: one queue -> director on dir_cpu, generator side on gen_cpu;
    # N queues -> queue q on CPU q mod nproc on both sides.
    local dcpus gcpus q
    if ((queues == 1)); then
        dcpus=$dir_cpu
        gcpus=$gen_cpu
    else
        dcpus=""
        for ((q = 0; q < queues; q++)); do dcpus+="${dcpus:+,}$((q % ncpu))"; done
        gcpus=$dcpus
    fi
    : >"$STATE/napi"
    napi_pin "$d:eth0" "$dcpus"
    napi_pin "$d:eth1" "$dcpus"
    # The sink side runs SCHED_FIFO: on the generator's CPU it would otherwise
    # wait behind the generator (which spins in the kernel until preempted),
    # its veth ring would overflow and the director would be blamed for the
    # loss. The director side keeps the default policy, as deployed.
    napi_pin "$P-gen:g0" "$gcpus" --fifo 10
    napi_pin "$P-sink:s0" "$gcpus" --fifo 10

    {
        echo "PREFIX=$P"
        echo "QUEUES=$queues"
        echo "GEN_CPU=$gen_cpu"
        echo "DIR_CPU=$dir_cpu"
        echo "GEN_NS=$P-gen"
        echo "GEN_IF=g0"
        echo "GEN_MAC=$GEN_MAC"
        echo "DIR_NS=$P-dir"
        echo "DIR_IF=eth0"
        echo "DIR_IP=$DIR_IP"
        echo "DIR_MAC=$(mac_for "$DIR_IP")"
        echo "DIR_INT_IF=eth1"
        echo "DIR_INT_IP=$DIR_INT_IP"
        echo "DIR_INT_MAC=$(mac_for "$DIR_INT_IP")"
        echo "SINK_NS=$P-sink"
        echo "SINK_IF=s0"
        echo "SINK_MAC=$SINK_MAC"
        echo "VIP=$VIP"
        echo "DR_RIPS=\"${DR_RIPS[*]}\""
        echo "TUN_RIPS=\"${TUN_RIPS[*]}\""
        echo "NAT_RIPS=\"${NAT_RIPS[*]}\""
    } >"$STATE/topology"
    UP_DONE=1
    echo "bench topology $P up: $P-gen:g0 <-> $P-dir:eth0 ($DIR_IP, VIP $VIP) | $P-dir:eth1 ($DIR_INT_IP) <-> $P-sink:s0; $queues queue(s)"
    sed 's/^/  /' "$STATE/napi"
}

do_status() {
    local nss
    mapfile -t nss < <(our_namespaces)
    if [[ ${#nss[@]} -ne 3 ]]; then
        echo "bench topology $P: down${nss[*]:+ (partial: ${nss[*]})}"
        return 1
    fi
    echo "bench topology $P: up"
    cat "$STATE/topology" 2>/dev/null | sed 's/^/  /'
    cat "$STATE/napi" 2>/dev/null | sed 's/^/  /'
    local at
    for at in "$P-gen:g0" "$P-sink:s0"; do
        "$(bench_bin)" sink read "$at" 2>&1 | head -1 | sed 's/^/  sink /'
    done
}

[[ $# -ge 1 ]] || { usage; exit 2; }
cmd=$1
shift
case "$cmd" in
    up | down | status) ;;
    -h | --help) usage; exit 0 ;;
    *) usage; exit 2 ;;
esac
[[ $P =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{0,9}$ ]] || die "XVS_BENCH_PREFIX must be 1-10 of [A-Za-z0-9_-] (got '$P')"
[[ $(id -u) -eq 0 ]] || die "must run as root (creates network namespaces)"

mkdir -p "$STATE_BASE"
exec 9>"$STATE_BASE/$P.lock"
flock -w 60 9 || die "another bench-topo.sh is busy with prefix $P"

case "$cmd" in
    up) do_up "$@" ;;
    down)
        [[ $# -eq 0 ]] || { usage; exit 2; }
        do_down
        ;;
    status) do_status ;;
esac
