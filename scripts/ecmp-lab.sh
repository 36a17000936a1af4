#!/usr/bin/env bash
# Scale-out lab: xvs directors behind a router doing ECMP, each director announcing
# the VIPs with a real routing daemon (BIRD 2, or FRR on one director).
#
# Usage: scripts/ecmp-lab.sh up [--directors N] [--rs N] [--frr K]
#        scripts/ecmp-lab.sh down
#        scripts/ecmp-lab.sh status   (exit 0 when up: servers listen, BGP sessions up)
#
# Names below: P = $XVS_NS_PREFIX (default "xe"). Addresses:
#   P-sw      bridge br0 (STP off, forward_delay 0): ports rtr, dirK, rsK
#   P-rtr     eth0 10.20.0.1/24 (bridge), eth1 10.20.1.1/24 (veth to the client);
#             ip_forward=1, fib_multipath_hash_policy=1 (L4 hash), rp_filter=0;
#             BIRD with docs/scale-out/bird-router.conf: eBGP to every director,
#             one ECMP route per VIP (merge paths)
#   P-client  eth0 10.20.1.100/24, default via 10.20.1.1; TX checksum offload off
#   P-dirK    eth0 10.20.0.(10+K)/24 (K = 1..3), default via 10.20.0.1;
#             ip_forward=0, arp_ignore=1, arp_announce=2 (the VIPs sit on xvsd's
#             announce device; the director must not answer ARP for them);
#             BIRD with docs/scale-out/bird-director.conf (or FRR with
#             docs/scale-out/frr-director.conf on director --frr K): exports the
#             /32s on xvs-vips. xvsd is NOT started here: the test starts it
#             (xvsd -i eth0 --announce-dev xvs-vips), so it can stop and kill it.
#   P-rsK     eth0 10.20.0.(20+K)/24 (K = 1..8), default via 10.20.0.1 (DR replies go
#             to the client through the router); VIP 10.20.9.88 on lo via
#             scripts/rs-dr.sh; scripts/rs-http.py rsK on :80 (UDP :5353) and
#             scripts/stream.py server on :9000
# VIP 10.20.9.88 is in no subnet: only the routes the directors announce reach it.
# MACs: 02:00 + the four octets of the interface's address, as in harness.sh.
#
# A bridge port facing a director runs bpf/xvs_veth_pass.bpf.c (XDP_PASS), so the
# frames xvs's fast path sends with XDP_TX are not dropped by the veth (harness.sh
# does the same). Unknown-unicast flooding is off on the directors' ports (a veth has
# no MAC filter).
#
# State (pids, logs, generated configs, control sockets) in /run/xvs-ecmp/P/:
# bird-rtr.ctl, bird-dirK.ctl, bird-*.log, frr-dirK/ (FRR's pathspace), rsK*.log.
# `up` removes what an earlier run with the same prefix left; `down` always succeeds
# and stops every process in the prefix's namespaces. Run it under the netns lock:
#   flock -o /tmp/xvs-netns.lock scripts/ecmp-lab.sh up
#
# Environment:
#   XVS_NS_PREFIX  namespace name prefix (default xe)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib-ns.sh
. "$ROOT/scripts/lib-ns.sh"
P=${XVS_NS_PREFIX:-xe}
STATE=/run/xvs-ecmp/$P
VIP=10.20.9.88
RTR_IP=10.20.0.1
RTR_CLIENT_IP=10.20.1.1
CLIENT_IP=10.20.1.100
HTTP_PORT=80
UDP_PORT=5353
STREAM_PORT=9000
DIRECTORS=2
RS=2
FRR_DIR=0

die() {
    echo "ecmp-lab.sh: error: $*" >&2
    exit 1
}
log() { echo "ecmp-lab.sh[$P]: $*" >&2; }
dir_ip() { echo "10.20.0.$((10 + $1))"; }
rs_ip() { echo "10.20.0.$((20 + $1))"; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

our_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' |
        grep -E "^${P}-(sw|rtr|client|dir[0-9]+|rs[0-9]+)\$" || true
}

do_down() {
    set +e
    local ns pids
    for ns in $(our_namespaces); do
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        kill_pids "${pids[@]}"
    done
    for ns in $(our_namespaces); do
        [[ $ns == "$P"-rs* ]] && nsx "$ns" bash "$ROOT/scripts/rs-dr.sh" stop >/dev/null 2>&1
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

# A veth: bridge end $1 in P-sw, other end eth0 in namespace $2 with MAC $3.
add_port() {
    local port=$1 ns=$2 mac=$3
    ip -n "$P-sw" link add "$port" type veth peer name eth0 netns "$ns" address "$mac"
    ip -n "$P-sw" link set "$port" master br0
    if [[ $port == dir* ]]; then
        ip -n "$P-sw" link set dev "$port" xdp obj "$PASS_OBJ" sec xdp
        nsx "$P-sw" bridge link set dev "$port" flood off
    fi
    ip -n "$P-sw" link set "$port" up
}

# Starts a daemon in the background in namespace $1, its own session, output to $2.
spawn() {
    local ns=$1 logf=$2
    shift 2
    setsid ip netns exec "$ns" "$@" </dev/null >"$logf" 2>&1 9>&- &
}

start_bird() {
    local ns=$1 name=$2 conf=$3
    nsx "$ns" bird -p -c "$conf" || die "$name: bird -p -c $conf refused the file"
    spawn "$ns" "$STATE/bird-$name.log" bird -f -c "$conf" -s "$STATE/bird-$name.ctl" -P "$STATE/bird-$name.pid"
}

# FRR's zebra and bgpd for director $1, in a pathspace of their own (-N) so that
# several FRRs (or the host's) do not share sockets. As user frr (Debian's package puts
# it in the frrvty group, which FRR requires of the user its vty runs as; root is not).
start_frr() {
    local k=$1 ns="$P-dir$1" dir="$STATE/frr-dir$1"
    mkdir -p "$dir"
    sed "s/10\.20\.0\.11/$(dir_ip "$k")/g" "$ROOT/docs/scale-out/frr-director.conf" >"$dir/frr.conf"
    chown -R frr:frr "$dir" 2>/dev/null || true
    spawn "$ns" "$dir/zebra.log" /usr/lib/frr/zebra -N "$P-dir$k" --vty_socket "$dir" \
        -i "$dir/zebra.pid" -z "$dir/zserv.api" -f /dev/null -u frr -g frr
    local i
    for ((i = 0; i < 50; i++)); do # 5 s for zebra's API socket
        [[ -S $dir/zserv.api ]] && break
        sleep 0.1
    done
    [[ -S $dir/zserv.api ]] || die "dir$k: zebra did not start: $(cat "$dir/zebra.log")"
    spawn "$ns" "$dir/bgpd.log" /usr/lib/frr/bgpd -N "$P-dir$k" --vty_socket "$dir" \
        -i "$dir/bgpd.pid" -z "$dir/zserv.api" -f "$dir/frr.conf" -u frr -g frr
}

wait_listening() {
    local ns=$1 port=$2 i
    for ((i = 0; i < 100; i++)); do # 10 s
        [[ -n $(nsx "$ns" ss -Hltn "sport = :$port") ]] && return 0
        sleep 0.1
    done
    return 1
}

do_up() {
    while [[ $# -gt 0 ]]; do
        case $1 in
            --directors) DIRECTORS=${2:?}; shift 2 ;;
            --rs) RS=${2:?}; shift 2 ;;
            --frr) FRR_DIR=${2:?}; shift 2 ;;
            *) usage; exit 2 ;;
        esac
    done
    [[ $DIRECTORS =~ ^[1-3]$ ]] || die "--directors: 1 to 3"
    [[ $RS =~ ^[1-8]$ ]] || die "--rs: 1 to 8"
    [[ $FRR_DIR =~ ^[0-3]$ && $FRR_DIR -le $DIRECTORS ]] || die "--frr: a director number"
    [[ $P =~ ^[A-Za-z0-9_-]+$ ]] || die "bad prefix $P"
    command -v bird >/dev/null || die "bird not found (apt-get install bird2; scripts/deps.sh)"
    if [[ $FRR_DIR != 0 ]]; then
        [[ -x /usr/lib/frr/bgpd ]] || die "FRR not found (apt-get install frr; scripts/deps.sh)"
    fi
    do_down
    mkdir -p "$STATE"
    trap 'log "up failed: tearing down"; do_down' ERR
    PASS_OBJ="$STATE/xvs_veth_pass.o"
    clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
        -c "$ROOT/bpf/xvs_veth_pass.bpf.c" -o "$PASS_OBJ" || die "clang failed on bpf/xvs_veth_pass.bpf.c"

    new_ns "$P-sw"
    ip -n "$P-sw" link add br0 type bridge forward_delay 0 stp_state 0
    local t
    for t in iptables ip6tables arptables; do
        nsx "$P-sw" sysctl -qw "net.bridge.bridge-nf-call-$t=0" 2>/dev/null || true
    done
    ip -n "$P-sw" link set br0 up

    # The router.
    new_ns "$P-rtr"
    add_port rtr "$P-rtr" "$(mac_for "$RTR_IP")"
    nsx "$P-rtr" ip addr add "$RTR_IP/24" dev eth0
    nsx "$P-rtr" ip link set eth0 up
    nsx "$P-rtr" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0

    # The client, one veth from the router.
    new_ns "$P-client"
    ip -n "$P-rtr" link add eth1 address "$(mac_for "$RTR_CLIENT_IP")" type veth \
        peer name eth0 netns "$P-client" address "$(mac_for "$CLIENT_IP")"
    nsx "$P-rtr" ip addr add "$RTR_CLIENT_IP/24" dev eth1
    nsx "$P-rtr" sysctl -qw net.ipv4.conf.eth1.rp_filter=0
    nsx "$P-rtr" ip link set eth1 up
    nsx "$P-client" ip addr add "$CLIENT_IP/24" dev eth0
    # Full checksums on the wire (see harness.sh): xvs forwards frames as they come.
    nsx "$P-client" ethtool -K eth0 tx off >/dev/null
    nsx "$P-client" ip link set eth0 up
    nsx "$P-client" ip route add default via "$RTR_CLIENT_IP" dev eth0

    # The directors.
    local k ip
    for ((k = 1; k <= DIRECTORS; k++)); do
        ip=$(dir_ip "$k")
        new_ns "$P-dir$k"
        add_port "dir$k" "$P-dir$k" "$(mac_for "$ip")"
        nsx "$P-dir$k" ip addr add "$ip/24" dev eth0
        nsx "$P-dir$k" ip link set eth0 up
        nsx "$P-dir$k" ip route add default via "$RTR_IP" dev eth0
        nsx "$P-dir$k" sysctl -qw net.ipv4.ip_forward=0 \
            net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    done

    # The real servers.
    for ((k = 1; k <= RS; k++)); do
        ip=$(rs_ip "$k")
        new_ns "$P-rs$k"
        add_port "rs$k" "$P-rs$k" "$(mac_for "$ip")"
        nsx "$P-rs$k" ip addr add "$ip/24" dev eth0
        nsx "$P-rs$k" bash "$ROOT/scripts/rs-dr.sh" start "$VIP" >/dev/null
        nsx "$P-rs$k" ip link set eth0 up
        nsx "$P-rs$k" ip route add default via "$RTR_IP" dev eth0
        spawn "$P-rs$k" "$STATE/rs$k.log" python3 "$ROOT/scripts/rs-http.py" "rs$k" "$HTTP_PORT" "$UDP_PORT"
        spawn "$P-rs$k" "$STATE/rs$k-stream.log" python3 "$ROOT/scripts/stream.py" server --port "$STREAM_PORT"
    done

    # Routing daemons: the router's BIRD, then each director's.
    start_bird "$P-rtr" rtr "$ROOT/docs/scale-out/bird-router.conf"
    for ((k = 1; k <= DIRECTORS; k++)); do
        if [[ $k == "$FRR_DIR" ]]; then
            start_frr "$k"
        else
            sed "s/10\.20\.0\.11/$(dir_ip "$k")/g" "$ROOT/docs/scale-out/bird-director.conf" \
                >"$STATE/bird-dir$k.conf"
            start_bird "$P-dir$k" "dir$k" "$STATE/bird-dir$k.conf"
        fi
    done

    for ((k = 1; k <= RS; k++)); do
        wait_listening "$P-rs$k" "$HTTP_PORT" || die "rs$k: nothing listens on :$HTTP_PORT"
        wait_listening "$P-rs$k" "$STREAM_PORT" || die "rs$k: nothing listens on :$STREAM_PORT"
    done
    for ((k = 1; k <= DIRECTORS; k++)); do
        nsx "$P-rtr" ping -c 1 -W 2 -q "$(dir_ip "$k")" >/dev/null || die "router cannot reach dir$k"
    done
    nsx "$P-client" ping -c 1 -W 2 -q "$RTR_CLIENT_IP" >/dev/null || die "client cannot reach the router"
    # Every BGP session up (bounded): the directors' routes can come as soon as xvsd runs.
    local i up
    for ((i = 0; i < 100; i++)); do # 10 s
        up=$(sessions_up)
        [[ $up -ge $DIRECTORS ]] && break
        sleep 0.1
    done
    [[ $up -ge $DIRECTORS ]] || die "only $up of $DIRECTORS BGP sessions established: $(birdc -s "$STATE/bird-rtr.ctl" show protocols 2>&1)"
    trap - ERR
    log "up: $DIRECTORS directors, $RS real servers, VIP $VIP (announced once xvsd runs with --announce-dev xvs-vips and a live real server)"
}

# Established BGP sessions on the router.
sessions_up() {
    birdc -s "$STATE/bird-rtr.ctl" show protocols 2>/dev/null | awk '$2 == "BGP" && $6 == "Established"' | wc -l
}

do_status() {
    [[ -S $STATE/bird-rtr.ctl ]] || { log "not up"; return 1; }
    birdc -s "$STATE/bird-rtr.ctl" show protocols
    ip -n "$P-rtr" route show "$VIP"
    [[ $(sessions_up) -ge 1 ]]
}

case "${1:-}" in
    up) shift; do_up "$@" ;;
    down) do_down ;;
    status) do_status ;;
    -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
