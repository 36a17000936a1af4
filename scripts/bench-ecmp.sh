#!/usr/bin/env bash
# Scale-out benchmark (issue 13): the aggregate rate that 1 and 2 xvs directors
# forward behind a router doing ECMP, on this machine.
#
# Usage: scripts/bench-ecmp.sh [--rounds N] [--smoke] [--no-build] [--size BYTES]
#                              [--flows N]
#
#   --rounds N  interleaved rounds (default 3): every round runs every row once
#   --smoke     one short round (about 1 minute after the build)
#   --no-build  use the binaries in target/release as they are
#
# Topology (prefix xm; built here, torn down on exit, also on failure or ctrl-C):
#
#   xm-gen  g0 ── r0 10.11.0.1/24  xm-rtr  r1 10.12.1.1/24 ── eth0 10.12.1.2/24  xm-dir1
#                                          r2 10.12.2.1/24 ── eth0 10.12.2.2/24  xm-dir2
#
#   The router forwards in the kernel (ip_forward=1, fib_multipath_hash_policy=1:
#   an L4 hash) along `ip route VIP nexthop via 10.12.1.2 nexthop via 10.12.2.2`,
#   which is the route BIRD installs from the directors' announcements in
#   scripts/ecmp-lab.sh (the announcing itself is tested in tests/e2e_ecmp.rs;
#   here a static route keeps BGP out of the measurement). With one director the
#   route has director 1 twice, so the router does the same multipath hashing. Each director runs xvsd -i eth0 with the same DR
#   service (mh, 4 real servers 10.12.0.21-24, permanent neighbour entries); DR
#   frames go back out of eth0 to the router's rK, where the counting sink
#   (xvs-bench sink, XDP) counts and drops them. The generator (xvs-bench,
#   BPF_PROG_RUN live frames) sends UDP from --flows source address/port pairs
#   to VIP:80 with the router's MAC.
#
# CPUs (this VM has 2): the generator, the router's NAPI kthread (its kernel
# forwarding) and the sinks run on CPU 1; the directors (xvsd's worker and the
# NAPI kthread of the director's eth0) as the row says:
#   one       1 director on CPU 0
#   two_cpu0  2 directors, both on CPU 0 (the CPU budget of `one`: what ECMP
#             spreading costs or gains on its own)
#   two_cpu01 2 directors, one on CPU 0, one on CPU 1 (sharing CPU 1 with the
#             generator and the router)
# each with the fast path (default) and with --no-fast-path (`_slow`).
# Rate: xvs-bench peak (flat out, then a search over offered rates; the highest
# forwarded rate of any window, and the flat-out one). ns/packet: CPU time of
# the directors' threads and NAPI kthreads over the window per forwarded frame.
# share: the fraction of forwarded frames each director sent (the ECMP split),
# from the sinks' counters over the row.
#
# Results: target/bench/ecmp-DATE.jsonl, log target/bench/ecmp-DATE.log; a
# median table is printed (copy it into docs/benchmarks.md by hand).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib-ns.sh
. "$ROOT/scripts/lib-ns.sh"
cd "$ROOT"

ROUNDS=3
SMOKE=0
BUILD=1
SIZE=64
FLOWS=1024
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; }
die() {
    echo "bench-ecmp.sh: error: $*" >&2
    exit 1
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) [[ $# -ge 2 ]] || { usage; exit 2; }; ROUNDS=$2; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --size) [[ $# -ge 2 ]] || { usage; exit 2; }; SIZE=$2; shift 2 ;;
        --flows) [[ $# -ge 2 ]] || { usage; exit 2; }; FLOWS=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage; exit 2 ;;
    esac
done
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 20)) || die "--rounds must be 1..20"
[[ $SIZE =~ ^[0-9]+$ ]] && ((SIZE >= 64 && SIZE <= 1518)) || die "--size must be 64..1518"
[[ $FLOWS =~ ^[0-9]+$ ]] && ((FLOWS >= 16 && FLOWS <= 100000)) || die "--flows must be 16..100000"
[[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, XDP)"
(($(nproc) >= 2)) || die "needs at least 2 CPUs"

if ((SMOKE)); then
    ROUNDS=1
    PEAK_ARGS=(--warmup 0.3 --window 0.4 --settle 0.15 --steps 2)
else
    PEAK_ARGS=(--warmup 0.5 --window 0.8 --settle 0.3 --steps 6)
fi

P=xm
VIP=10.12.9.88
GEN_MAC=02:00:0a:0b:00:64
RIPS=(10.12.0.21 10.12.0.22 10.12.0.23 10.12.0.24)
BIN=$ROOT/target/release
BENCH=$BIN/xvs-bench
XVSD=$BIN/xvsd
XVSADM=$BIN/xvsadm
STATE=/run/xvs-bench-ecmp
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUTDIR=$ROOT/target/bench
mkdir -p "$OUTDIR" "$STATE"
RESULTS=$OUTDIR/ecmp-$STAMP.jsonl
LOG=$OUTDIR/ecmp-$STAMP.log
: >"$RESULTS"
: >"$LOG"
XVSD_PIDS=()

log() { echo "bench-ecmp.sh: $*" | tee -a "$LOG" >&2; }

topo_down() {
    local ns pid
    for ns in $P-gen $P-rtr $P-dir1 $P-dir2; do
        ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do stop_pid "$pid"; done
        ip netns del "$ns" 2>/dev/null || log "warning: could not delete namespace $ns"
    done
}

cleanup() {
    set +e
    local pid
    for pid in "${XVSD_PIDS[@]}"; do stop_pid "$pid"; done
    topo_down
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f ${CARGO_HOME:-$HOME/.cargo}/env ]]; then
    # shellcheck disable=SC1091
    . "${CARGO_HOME:-$HOME/.cargo}/env"
fi
if ((BUILD)); then
    log "building release binaries"
    cargo build --release --workspace --bins 2>&1 | tail -n 3 | tee -a "$LOG" >&2
fi
for b in "$BENCH" "$XVSD" "$XVSADM"; do
    [[ -x $b ]] || die "$b missing (cargo build --release --workspace --bins)"
done
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf '{"kind":"meta","bench":"ecmp","commit":"%s","date":"%s","kernel":"%s","nproc":"%s","rounds":"%s","size":"%s","flows":"%s"}\n' \
    "$COMMIT" "$(date -u +%Y-%m-%d)" "$(uname -r)" "$(nproc)" "$ROUNDS" "$SIZE" "$FLOWS" >>"$RESULTS"

# --- topology ------------------------------------------------------------------

new_ns() {
    ip netns add "$1"
    ip -n "$1" link set lo up
    nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    local key
    for key in all default; do
        nsx "$1" sysctl -qw "net.ipv4.conf.$key.rp_filter=0" "net.ipv4.conf.$key.send_redirects=0"
    done
}

# Up, GRO on (so a veth accepts frames XDP_TX'd or forwarded into it and has its NAPI
# instances without XDP; switched on after `up`, see bench-topo.sh), threaded NAPI.
napi_setup() {
    local ns=$1 ifname=$2
    ip -n "$ns" link set "$ifname" up
    nsx "$ns" ethtool -K "$ifname" gro on >/dev/null
    nsx "$ns" sh -c "echo 1 > /sys/class/net/$ifname/threaded" || die "$ns:$ifname: no threaded NAPI"
}

napi_pin() { "$BENCH" napi "$@" >>"$LOG" || die "$1: could not pin its NAPI kthreads"; }

topo_up() {
    topo_down
    local k rtr_if dir_ip rip
    new_ns "$P-gen"
    new_ns "$P-rtr"
    ip -n "$P-gen" link add g0 address "$GEN_MAC" type veth peer name r0 netns "$P-rtr" \
        address "$(mac_for 10.11.0.1)"
    nsx "$P-rtr" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
    nsx "$P-rtr" ip addr add 10.11.0.1/24 dev r0
    napi_setup "$P-gen" g0
    napi_setup "$P-rtr" r0
    for k in 1 2; do
        rtr_if=r$k
        dir_ip=10.12.$k.2
        new_ns "$P-dir$k"
        ip -n "$P-rtr" link add "$rtr_if" address "$(mac_for "10.12.$k.1")" type veth \
            peer name eth0 netns "$P-dir$k" address "$(mac_for "$dir_ip")"
        nsx "$P-rtr" ip addr add "10.12.$k.1/24" dev "$rtr_if"
        nsx "$P-rtr" sysctl -qw "net.ipv4.conf.$rtr_if.rp_filter=0" "net.ipv4.conf.$rtr_if.send_redirects=0"
        nsx "$P-rtr" ip neigh replace "$dir_ip" lladdr "$(mac_for "$dir_ip")" dev "$rtr_if" nud permanent
        nsx "$P-dir$k" sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.arp_ignore=1 \
            net.ipv4.conf.all.arp_announce=2
        nsx "$P-dir$k" ip addr add "$dir_ip/24" dev eth0
        napi_setup "$P-rtr" "$rtr_if"
        napi_setup "$P-dir$k" eth0
        # The real servers: the same four behind every director (mh needs the same list),
        # reached on eth0; their frames end in the router's sink.
        nsx "$P-dir$k" ip route add 10.12.0.0/24 dev eth0
        for rip in "${RIPS[@]}"; do
            nsx "$P-dir$k" ip neigh replace "$rip" lladdr "$(mac_for "$rip")" dev eth0 nud permanent
        done
        "$BENCH" sink attach "$P-rtr:$rtr_if" >>"$LOG" || die "attaching the sink to $P-rtr:$rtr_if"
        # Sinks SCHED_FIFO, as in bench-topo.sh: on the generator's CPU they must keep up.
        napi_pin "$P-rtr:$rtr_if" --pin 1 --fifo 10 --threaded
    done
    napi_pin "$P-gen:g0" --pin 1 --threaded
    napi_pin "$P-rtr:r0" --pin 1 --threaded
}

# route N: the router's VIP route with next hops director 1..N. With one director the
# route still has two next hops (both director 1), so the router hashes every packet in
# both cases: like with like.
route() {
    local n=$1 hops=() k
    for ((k = 1; k <= 2; k++)); do
        if ((n >= k)); then
            hops+=(nexthop via "10.12.$k.2" dev "r$k")
        else
            hops+=(nexthop via 10.12.1.2 dev r1)
        fi
    done
    nsx "$P-rtr" ip route replace "$VIP/32" "${hops[@]}"
}

# xvsd_start K CPU [ARGS...]: xvsd on director K, its worker and eth0's NAPI on CPU.
xvsd_start() {
    local k=$1 cpu=$2 sock=$STATE/dir$1.sock i pid rip
    shift 2
    napi_pin "$P-dir$k:eth0" --pin "$cpu" --threaded
    rm -f "$sock"
    echo "--- xvsd dir$k cpu $cpu $*" >>"$LOG"
    # The worker is pinned to the first CPU of xvsd's affinity mask (core_affinity).
    # Not through nsx: a backgrounded function is a subshell, and $! would be its pid.
    ip netns exec "$P-dir$k" taskset -c "$cpu" "$XVSD" --interface eth0 --socket "$sock" "$@" >>"$LOG" 2>&1 &
    pid=$!
    XVSD_PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do # 10 s
        [[ -S $sock ]] && break
        kill -0 "$pid" 2>/dev/null || die "xvsd on dir$k exited at start (see $LOG)"
        sleep 0.1
    done
    [[ -S $sock ]] || die "xvsd on dir$k: no control socket after 10 s"
    {
        "$XVSADM" --socket "$sock" -A -u "$VIP:80" -s mh
        for rip in "${RIPS[@]}"; do "$XVSADM" --socket "$sock" -a -u "$VIP:80" -r "$rip:80" -g; done
    } >>"$LOG" 2>&1 || die "configuring xvsd on dir$k failed (see $LOG)"
}

xvsd_stop_all() {
    local pid k
    for k in 1 2; do
        [[ -S $STATE/dir$k.sock ]] && "$XVSADM" --socket "$STATE/dir$k.sock" --datapath >>"$LOG" 2>&1
    done
    for pid in "${XVSD_PIDS[@]}"; do
        stop_pid "$pid"
        wait "$pid" 2>/dev/null || true
    done
    XVSD_PIDS=()
    rm -f "$STATE"/dir*.sock
}

sink_count() { "$BENCH" sink read "$P-rtr:$1" --value packets 2>>"$LOG"; }

# row NAME ROUND VARIANT CPU1 [CPU2]: directors on the CPUs given, then the peak search.
row() {
    local name=$1 round=$2 variant=$3 cpu1=$4 cpu2=${5:-} extra=() n=1 tasks=() pid
    [[ -n $variant ]] && extra+=("$variant") && name+=_slow
    [[ -n $cpu2 ]] && n=2
    route "$n"
    xvsd_start 1 "$cpu1" "${extra[@]}"
    [[ -n $cpu2 ]] && xvsd_start 2 "$cpu2" "${extra[@]}"
    tasks+=(--napi "$P-dir1:eth0" --kthread "ksoftirqd/$cpu1")
    [[ -n $cpu2 ]] && tasks+=(--napi "$P-dir2:eth0")
    [[ -n $cpu2 && $cpu2 != "$cpu1" ]] && tasks+=(--kthread "ksoftirqd/$cpu2")
    for pid in "${XVSD_PIDS[@]}"; do tasks+=(--pid "$pid"); done
    local a1 a2 b1 b2 out pps flat ns
    a1=$(sink_count r1)
    a2=$(sink_count r2)
    echo "--- $name round $round" >>"$LOG"
    out=$("$BENCH" peak --netns "$P-gen" --ifname g0 --dst-mac "$(mac_for 10.11.0.1)" \
        --dst-ip "$VIP" --size "$SIZE" --flows "$FLOWS" --cpus 1 \
        --sink "$P-rtr:r1" --sink "$P-rtr:r2" "${tasks[@]}" "${PEAK_ARGS[@]}" --verbose \
        --tag "row=$name" --tag "round=$round" --tag "directors=$n" --out "$RESULTS" \
        --value pps,flat_pps,ns_per_pkt 2>>"$LOG") ||
        { log "warning: $name round $round: measurement failed (see $LOG)"; out="0 0 -"; }
    read -r pps flat ns <<<"$out"
    b1=$(sink_count r1)
    b2=$(sink_count r2)
    local s1=$((b1 - a1)) s2=$((b2 - a2)) share
    share=$(awk -v x="$s1" -v y="$s2" 'BEGIN{t=x+y; if (t>0) printf "%.2f/%.2f", x/t, y/t; else print "-"}')
    printf '{"kind":"ecmp","row":"%s","round":"%s","directors":%s,"pps":%s,"flat_pps":%s,"ns_per_pkt":"%s","dir1_frames":%s,"dir2_frames":%s}\n' \
        "$name" "$round" "$n" "${pps:-0}" "${flat:-0}" "$ns" "$s1" "$s2" >>"$RESULTS"
    log "$name round $round: best $(awk -v p="$pps" 'BEGIN{printf "%.3f", p/1e6}') Mpps, flat out $(awk -v p="$flat" 'BEGIN{printf "%.3f", p/1e6}') Mpps, $ns ns/pkt, split dir1/dir2 $share"
    xvsd_stop_all
}

# direct_row NAME ROUND VARIANT N: the directors' own capacity, without the router's
# kernel forwarding (the bottleneck of the rows above on this VM): generators in the
# router namespace send straight out of r1 (and r2) to the directors, as a hardware
# router's ECMP would deliver, flat out, a generator thread on each CPU:
#   N=1: director 1 on CPU 0, both generator threads to it (like bench.sh's mq1)
#   N=2: director K and a generator thread to it on CPU K-1 (like mq2)
direct_row() {
    local name=$1 round=$2 variant=$3 n=$4 extra=() gens=() tasks=() pid k secs=4
    [[ -n $variant ]] && extra+=("$variant") && name+=_slow
    local gen_args=(gen --netns "$P-rtr" --dst-ip "$VIP" --size "$SIZE" --flows "$FLOWS"
        --duration "$secs" --quiet)
    if ((n == 1)); then
        xvsd_start 1 0 "${extra[@]}"
        "$BENCH" "${gen_args[@]}" --ifname r1 --dst-mac "$(mac_for 10.12.1.2)" --cpus 0,1 >>"$LOG" 2>&1 &
        gens+=($!)
        tasks+=(--napi "$P-dir1:eth0" --kthread ksoftirqd/0)
    else
        for k in 1 2; do
            xvsd_start "$k" $((k - 1)) "${extra[@]}"
            "$BENCH" "${gen_args[@]}" --ifname "r$k" --dst-mac "$(mac_for "10.12.$k.2")" \
                --cpus $((k - 1)) >>"$LOG" 2>&1 &
            gens+=($!)
            tasks+=(--napi "$P-dir$k:eth0")
        done
        tasks+=(--kthread ksoftirqd/)
    fi
    for pid in "${XVSD_PIDS[@]}"; do tasks+=(--pid "$pid"); done
    for pid in "${gens[@]}"; do tasks+=(--bench-pid "$pid"); done
    sleep 1
    local a1 a2 out pps ns
    a1=$(sink_count r1)
    a2=$(sink_count r2)
    echo "--- $name round $round" >>"$LOG"
    out=$("$BENCH" measure --sink "$P-rtr:r1" --sink "$P-rtr:r2" "${tasks[@]}" --interval 2 \
        --tag "row=$name" --tag "round=$round" --tag "directors=$n" --out "$RESULTS" \
        --value pps,ns_per_pkt 2>>"$LOG") ||
        { log "warning: $name round $round: measurement failed (see $LOG)"; out="0 -"; }
    read -r pps ns <<<"$out"
    local s1=$(($(sink_count r1) - a1)) s2=$(($(sink_count r2) - a2))
    for pid in "${gens[@]}"; do wait "$pid" 2>/dev/null || true; done
    printf '{"kind":"ecmp","row":"%s","round":"%s","directors":%s,"pps":%s,"flat_pps":%s,"ns_per_pkt":"%s","dir1_frames":%s,"dir2_frames":%s}\n' \
        "$name" "$round" "$n" "${pps:-0}" "${pps:-0}" "$ns" "$s1" "$s2" >>"$RESULTS"
    log "$name round $round: flat out $(awk -v p="$pps" 'BEGIN{printf "%.3f", p/1e6}') Mpps, $ns ns/pkt"
    xvsd_stop_all
}

log "topology $P: generator, router (ECMP), 2 directors"
topo_up
VARIANTS=("" --no-fast-path)
for ((r = 1; r <= ROUNDS; r++)); do
    "$BENCH" quiet --max-busy 0.3 --timeout 30 >>"$LOG" 2>&1 || true
    for v in "${VARIANTS[@]}"; do
        row one "$r" "$v" 0
        row two_cpu0 "$r" "$v" 0 0
        row two_cpu01 "$r" "$v" 0 1
        direct_row direct_one "$r" "$v" 1
        direct_row direct_two "$r" "$v" 2
    done
done

# Median table.
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("kind") == "ecmp":
        rows.setdefault(d["row"], []).append(d)
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")
def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
base = {}
print("| row | directors | best Mpps (median) | flat out Mpps | vs 1 director | ns/pkt | split dir1/dir2 | rounds |")
print("|---|---|---|---|---|---|---|---|")
for name in ["one", "two_cpu0", "two_cpu01", "one_slow", "two_cpu0_slow", "two_cpu01_slow",
             "direct_one", "direct_two", "direct_one_slow", "direct_two_slow"]:
    ds = rows.get(name)
    if not ds:
        continue
    best = med([num(d["pps"]) for d in ds])
    flat = med([num(d["flat_pps"]) for d in ds])
    ns = med([num(d["ns_per_pkt"]) for d in ds])
    f1 = sum(d["dir1_frames"] for d in ds)
    f2 = sum(d["dir2_frames"] for d in ds)
    t = f1 + f2
    split = f"{f1/t:.2f}/{f2/t:.2f}" if t else "-"
    key = "slow" if name.endswith("_slow") else "fast"
    if name.startswith("direct"):
        key = "direct_" + key
    if name.startswith("one") or name.startswith("direct_one"):
        base[key] = best
    ratio = f"{best/base[key]:.2f}x" if base.get(key) else "-"
    print(f"| {name} | {ds[0]['directors']} | {best/1e6:.3f} | {flat/1e6:.3f} | {ratio} | {ns:.0f} | {split} | {len(ds)} |")
EOF
log "results: $RESULTS, log: $LOG"
