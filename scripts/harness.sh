#!/usr/bin/env bash
# LVS labs built from network namespaces: DR (the default), two-armed NAT,
# one-armed NAT and routed TUN.
#
# Usage: scripts/harness.sh up [--topology dr|nat2|nat1|tun] [--rs N] [--queues Q] [--extras]
#                             [--client-router] [--pair | --directors 2]
#        scripts/harness.sh down
#        scripts/harness.sh status   (exit 0 when up and every RS listens)
#
# Names below: P = $XVS_NS_PREFIX (default "xvs"). Every bridge lives in its
# own namespace as br0 (STP off, forward_delay 0, bridge netfilter off); its
# ports are named after the namespace they lead to. Every MAC is 02:00
# (locally administered) followed by the four octets of the interface's first
# IPv4 address, e.g. 10.0.0.12 -> 02:00:0a:00:00:0c.
#
# --topology dr (default): classic LVS-DR, one L2 segment.
#   P-sw      bridge: ports client, dir, rsK
#   P-client  eth0  10.0.0.100/24, also 10.0.0.101-104/24
#   P-dir     eth0  DIP 10.0.0.12/24, VIP 10.0.0.88/32 (Q queues, --queues)
#   P-rsK     eth0  RIP 10.0.0.9 (rs1), 10.0.0.20 (rs2), 10.0.0.21 (rs3),
#                   10.0.0.22 ... (rsK = 10.0.0.(18+K) for K >= 2); no default
#                   route; VIP on lo via scripts/rs-dr.sh
#
# --pair (or --directors 2; dr and nat2): an HA pair of directors.
#   dr:
#   P-dir     eth0  DIP 10.0.0.12/24, no VIP
#   P-dir2    eth0  DIP2 10.0.0.13/24, no VIP (Q queues as P-dir)
#   Neither director holds the VIP: VRRP (keepalived -P) adds 10.0.0.88 to
#   the master's eth0 and moves it. Both have ip_forward=0. Both bridge ports
#   have unknown-unicast flooding off (a real NIC filters frames for other
#   MACs; veth does not, and a dead master's frames would reach the backup).
#   nat2 (two two-armed directors, the classic LVS-NAT pair):
#   P-dir     eth0  10.0.0.12/24 (on P-swx), eth1 192.168.80.2/24 (on P-swi)
#   P-dir2    eth0  10.0.0.13/24 (on P-swx), eth1 192.168.80.3/24 (on P-swi)
#   Neither holds the VIP 10.0.0.88 nor the real servers' gateway 192.168.80.1:
#   VRRP adds both to the master (two instances in one vrrp_sync_group) and
#   moves them together. The real servers' default route stays via
#   192.168.80.1. Flooding is off on all four director ports, as for dr.
#
# --topology nat2: classic two-armed LVS-NAT.
#   P-swx     external bridge: ports client, dir
#   P-swi     internal bridge: ports dir, rsK
#   P-client  eth0  10.0.0.100/24, also 10.0.0.101-104/24
#   P-dir     eth0  10.0.0.12/24, VIP 10.0.0.88/32   (on P-swx)
#             eth1  192.168.80.1/24                  (on P-swi)
#             Q queues on both; net.ipv4.ip_forward=0: only xvs forwards
#   P-rsK     eth0  RIP 192.168.80.(9+K)/24 (.10, .11, .12, ...), default
#                   route via 192.168.80.1; no VIP
#   (with --pair: see above; 192.168.80.1 then belongs to VRRP)
#
# --topology nat1: one-armed LVS-NAT, one L2 segment, two subnets.
#   P-sw      bridge: ports client, dir, rsK
#   P-client  eth0  172.16.0.100/24, also 172.16.0.101-104/24; route
#                   10.0.0.88/32 via 172.16.0.1
#   P-dir     eth0  10.0.0.12/24, VIP 10.0.0.88/32, 172.16.0.1/24;
#                   net.ipv4.ip_forward=0
#   P-rsK     eth0  RIP as in dr (10.0.0.9, 10.0.0.20, ...), default route via
#                   10.0.0.12 (so replies to the client go back through the
#                   director); no VIP
#
# --topology tun: routed LVS-TUN; real servers one router hop away.
#   P-sw      LAN bridge: ports client, dir, rtr
#   P-swr     RS bridge: ports rtr, rsK
#   P-client  eth0  10.0.0.100/24, also 10.0.0.101-104/24; default route via
#                   10.0.0.1
#   P-dir     eth0  DIP 10.0.0.12/24, VIP 10.0.0.88/32; route 10.0.1.0/24
#                   via 10.0.0.1; net.ipv4.ip_forward=0
#   P-rtr     eth0  10.0.0.1/24 (on P-sw), eth1 10.0.1.1/24 (on P-swr);
#             ip_forward=1, rp_filter=0 (RS replies come from the VIP, which
#             is on the LAN side: a strict reverse-path check would drop them)
#   P-rsK     eth0  RIP 10.0.1.(9+K)/24 (.10, .11, .12, ...), default route via
#                   10.0.1.1; scripts/rs-tun.sh start 10.0.0.88 (VIP on lo,
#                   IPIP decapsulation by the ipip module or, without it, the
#                   tc-BPF program bpf/xvs_decap.bpf.c on eth0 ingress)
#   All MTUs are 1500: a full-size client packet plus the 20-byte IPIP
#   header does not fit, as on a real Ethernet.
#
# --client-router (dr, nat2, tun): the client sits one router hop away, in its
#   own subnet, so that path MTU tests have a router between client and
#   director (a test lowers the MTU of the router's route to the client, e.g.
#   `ip route replace 10.0.2.0/24 dev eth1 src 10.0.2.1 mtu 1400`, and the
#   router answers full-size packets towards the client with ICMP
#   fragmentation needed, addressed to their source: the VIP).
#   P-crt     eth0  10.0.0.2/24 (on the client bridge), eth1 10.0.2.1/24,
#             a direct veth to the client; ip_forward=1, rp_filter=0
#   P-client  eth0  10.0.2.100/24, also 10.0.2.101-104/24; default route via
#             10.0.2.1
#   The director, the DR real servers and the tun router route 10.0.2.0/24
#   via 10.0.0.2 (nat2 real servers reach it through the director as always).
#
# Real servers run scripts/rs-http.py rsK 80 5353 (HTTP on :80, UDP on :5353,
# both answer "rsK\n") and scripts/stream.py server on :9000 (long-lived paced
# flows whose every byte the client checks; tests/common/flows.rs). With --extras, the default for every topology but dr,
# they also serve HTTP on :8080 (port-mapping tests: a service on :80 with
# real servers RIP:8080) and run `iperf3 -s` on :5201 (bulk TCP).
#
# TX checksum offload is off (ethtool -K ethX tx off) on every interface whose
# local stack sends frames that xvs forwards or rewrites: the client (all
# topologies) and the real servers of nat1/nat2 (xvs rewrites their replies).
# A veth stack leaves such checksums partial, for the "hardware" to finish;
# a frame that arrives over a wire always has a full checksum, so this makes
# the lab behave like a real deployment (see docs/real-servers.md). DR and TUN
# replies go from the real server to the client without xvs, so the real
# servers' offload stays on there.
#
# IPv6 is disabled in every namespace so that router solicitations, MLD and
# DAD frames do not show up as noise in the director's traffic.
#
# State (pidfiles, server logs, a sourceable topology file) lives in
# /run/xvs-harness/P/: rsK.pid, rsK.log, rsK-iperf.pid, rsK-iperf.log,
# rsK-stream.pid, rsK-stream.log, topology. The topology file records TOPOLOGY and every namespace,
# interface, address and MAC (keys listed in write_topology; a key that does
# not apply to the topology is present and empty). `up` first removes what an
# earlier run with the same prefix left behind; `down` tolerates any partial
# state and always succeeds. `down` stops every process still running inside
# the prefix's namespaces (for example an xvsd started in P-dir) before it
# deletes them, whichever topology they belong to.
#
# Environment:
#   XVS_NS_PREFIX  namespace name prefix (default xvs); letters, digits, _ and -
#   XVS_DECAP_OBJ  tun: compiled bpf/xvs_decap.bpf.c to use (default: built
#                  with clang into the state directory)
#   XVS_RS_TUN_METHOD  tun: passed on to rs-tun.sh (auto, ipip or bpf)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib-ns.sh
. "$ROOT/scripts/lib-ns.sh"
P=${XVS_NS_PREFIX:-xvs}
STATE_BASE=/run/xvs-harness
STATE=$STATE_BASE/$P

VIP=10.0.0.88
HTTP_PORT=80
UDP_PORT=5353
ALT_HTTP_PORT=8080
IPERF_PORT=5201
STREAM_PORT=9000
DIP2=10.0.0.13   # --pair: the second director
DIR2_INT_IP=""   # --pair nat2: the second director's eth1
PAIR=0
MAX_RS=60 # dr/nat1: rsK = 10.0.0.(18+K) stays below the VIP (.88) and the clients (.100+)

# Set by set_topology: addresses of the chosen topology. Interfaces are
# eth0 everywhere, plus eth1 on the nat2 director and on the router.
TOPOLOGY=dr
CLIENT_IP=10.0.0.100
CLIENT_EXTRA=(10.0.0.101 10.0.0.102 10.0.0.103 10.0.0.104)
CLIENT_PREFIXLEN=24
CLIENT_GW=""     # client's default route (tun)
DIP=10.0.0.12    # director's address on the client side (eth0)
DIR_INT_IF=eth0  # director's interface towards the real servers
DIR_INT_IP=10.0.0.12
DIR_CLIENT_GW="" # nat1: the director's address in the client's subnet
RS_PREFIXLEN=24
RS_GW=""         # real servers' default route
RTR_LAN_IP=""
RTR_RS_IP=""
PREFIXLEN=24
CLIENT_ROUTER=0
CRT_LAN_IP=10.0.0.2
CRT_CLIENT_IP=10.0.2.1
CRT_NET=10.0.2.0/24

set_topology() {
    TOPOLOGY=$1
    case "$TOPOLOGY" in
        dr) ;;
        nat2)
            DIR_INT_IF=eth1
            DIR_INT_IP=192.168.80.1
            RS_GW=192.168.80.1
            ;;
        nat1)
            CLIENT_IP=172.16.0.100
            CLIENT_EXTRA=(172.16.0.101 172.16.0.102 172.16.0.103 172.16.0.104)
            DIR_CLIENT_GW=172.16.0.1
            RS_GW=$DIP
            ;;
        tun)
            RTR_LAN_IP=10.0.0.1
            RTR_RS_IP=10.0.1.1
            CLIENT_GW=$RTR_LAN_IP
            RS_GW=$RTR_RS_IP
            ;;
        *) return 1 ;;
    esac
}

# --client-router: the client moves behind P-crt into 10.0.2.0/24.
set_client_router() {
    [[ $TOPOLOGY == nat1 ]] && return 1
    CLIENT_ROUTER=1
    CLIENT_IP=10.0.2.100
    CLIENT_EXTRA=(10.0.2.101 10.0.2.102 10.0.2.103 10.0.2.104)
    CLIENT_GW=$CRT_CLIENT_IP
    return 0
}

rs_ip() {
    local k=$1
    case "$TOPOLOGY" in
        nat2) echo "192.168.80.$((9 + k))" ;;
        tun) echo "10.0.1.$((9 + k))" ;;
        *) if ((k == 1)); then echo 10.0.0.9; else echo "10.0.0.$((18 + k))"; fi ;;
    esac
}

# The bridge namespace the real servers hang off.
rs_switch() {
    case "$TOPOLOGY" in
        nat2) echo "$P-swi" ;;
        tun) echo "$P-swr" ;;
        *) echo "$P-sw" ;;
    esac
}

# The bridge namespace of the client (and the director's eth0).
client_switch() {
    case "$TOPOLOGY" in
        nat2) echo "$P-swx" ;;
        *) echo "$P-sw" ;;
    esac
}

usage() {
    cat >&2 <<EOF
usage: $0 up [--topology dr|nat2|nat1|tun] [--rs N] [--queues Q] [--extras] [--client-router]
          [--pair | --directors 2]
       $0 down
       $0 status
  Builds (up), removes (down) or shows (status) an LVS namespace lab:
  dr   (default) ${P}-sw, ${P}-client, ${P}-dir, ${P}-rs1..N on one segment
  nat2 ${P}-swx (client side) and ${P}-swi (RS side, 192.168.80.0/24)
  nat1 one segment; client in 172.16.0.0/24, RS routed via the director
  tun  ${P}-sw LAN, router ${P}-rtr, RS behind it on ${P}-swr (10.0.1.0/24)
  --rs N       number of real servers (default 3, at most $MAX_RS)
  --queues Q   rx/tx queues of the director's veths (default 1)
  --extras     also HTTP :$ALT_HTTP_PORT and iperf3 :$IPERF_PORT on each RS
               (always on for nat2, nat1 and tun)
  --client-router  the client one router hop away (${P}-crt, 10.0.2.0/24);
               dr, nat2 and tun only
  --pair, --directors 2  dr and nat2: a second director ${P}-dir2 (10.0.0.13;
               nat2: eth1 192.168.80.3, the first's eth1 192.168.80.2) and
               no VIP (nat2: nor 192.168.80.1) on either director (VRRP adds
               them to the master)
  env XVS_NS_PREFIX   namespace prefix (now: $P)
EOF
}

die() {
    echo "harness.sh: error: $*" >&2
    exit 1
}

log() { echo "harness.sh[$P]: $*" >&2; }

# Every namespace that belongs to this prefix, including leftovers of any
# topology.
our_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' |
        grep -E "^${P}-(sw|swx|swi|swr|rtr|crt|client|dir|dir2|rs[0-9]+)\$" || true
}

do_down() {
    # Must always succeed, whatever state an interrupted up or test left.
    set +e
    local ns pidfile pid pids
    # 1. Servers we started, by pidfile (checking that the pid is still ours).
    if [[ -d $STATE ]]; then
        pids=()
        for pidfile in "$STATE"/*.pid; do
            [[ -f $pidfile ]] || continue
            pid=$(cat "$pidfile" 2>/dev/null)
            if [[ $pid =~ ^[0-9]+$ ]] && grep -qaE 'rs-http.py|iperf3|stream.py' "/proc/$pid/cmdline" 2>/dev/null; then
                pids+=("$pid")
            fi
            rm -f "$pidfile"
        done
        kill_pids "${pids[@]}"
    fi
    # 2. Anything else still inside our namespaces (xvsd, stray clients): a
    #    process keeps its namespace alive after `ip netns del`.
    for ns in $(our_namespaces); do
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        kill_pids "${pids[@]}"
    done
    # 3. Undo rs-tun.sh / rs-dr.sh (drops their per-namespace state files),
    #    then delete namespaces; the veths and the bridges go with them.
    for ns in $(our_namespaces); do
        if [[ $ns == "$P"-rs* ]]; then
            nsx "$ns" bash "$ROOT/scripts/rs-tun.sh" stop >/dev/null 2>&1
            nsx "$ns" bash "$ROOT/scripts/rs-dr.sh" stop >/dev/null 2>&1
        fi
        ip netns del "$ns" 2>/dev/null || log "warning: could not delete namespace $ns"
    done
    rm -rf "$STATE"
    set -e
    return 0
}

# Wait (bounded) until TCP listeners on the ports in $3 (space separated) and
# a UDP listener on $UDP_PORT exist in namespace $1; give up early if the
# server process $2 has died.
wait_listening() {
    local ns=$1 pid=$2 tcp_ports=$3 i port ok
    for ((i = 0; i < 100; i++)); do # 100 x 0.1 s = 10 s
        ok=1
        for port in $tcp_ports; do
            [[ -n $(nsx "$ns" ss -Hltn "sport = :$port") ]] || { ok=0; break; }
        done
        [[ $ok == 1 && -n $(nsx "$ns" ss -Hlun "sport = :$UDP_PORT") ]] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Wait (bounded) until a TCP listener on port $2 exists in namespace $1.
wait_tcp_port() {
    local ns=$1 port=$2 i
    for ((i = 0; i < 100; i++)); do # 100 x 0.1 s = 10 s
        [[ -n $(nsx "$ns" ss -Hltn "sport = :$port") ]] && return 0
        sleep 0.1
    done
    return 1
}

# curl from namespace $1 to http://$2:$4/ (port default $HTTP_PORT) and expect
# body $3; a few tries.
check_http() {
    local ns=$1 ip=$2 want=$3 port=${4:-$HTTP_PORT} got="" i
    for ((i = 0; i < 3; i++)); do
        got=$(nsx "$ns" curl -s --max-time 2 "http://$ip:$port/" 2>/dev/null || true)
        [[ $got == "$want" ]] && return 0
        sleep 0.2
    done
    log "$ns: http://$ip:$port/ answered '${got}', expected '$want'"
    return 1
}

# ping from namespace $1 to $2; a few tries.
check_ping() {
    local ns=$1 ip=$2 i
    for ((i = 0; i < 3; i++)); do
        nsx "$ns" ping -c 1 -W 1 -q "$ip" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "$ns: no ping answer from $ip"
    return 1
}

new_switch() {
    local ns=$1 t
    new_ns "$ns"
    # forward_delay 0: the default (15 s, even with STP off) keeps new ports in
    # the learning state and black-holes traffic for about 30 s.
    ip -n "$ns" link add br0 type bridge forward_delay 0 stp_state 0
    # A switch forwards frames without looking at them. With br_netfilter loaded the
    # bridge would run bridged IPv4 through netfilter and drop malformed IP headers,
    # so tests could never deliver a bad frame to the director: switch that off here.
    for t in iptables ip6tables arptables; do
        ip netns exec "$ns" sysctl -qw "net.bridge.bridge-nf-call-$t=0" 2>/dev/null || true
    done
    ip -n "$ns" link set br0 up
}

# Create a veth whose bridge end is port $2 of br0 in switch namespace $1 and
# whose other end is $4 in namespace $3, with $5 queues and MAC $6.
add_port() {
    local sw=$1 port=$2 ns=$3 ifname=$4 q=$5 mac=$6
    ip -n "$sw" link add "$port" numrxqueues "$q" numtxqueues "$q" type veth \
        peer name "$ifname" netns "$ns" numrxqueues "$q" numtxqueues "$q" address "$mac"
    ip -n "$sw" link set "$port" master br0
    # A frame a veth end sends with XDP_TX or bpf_redirect (xvs's fast path) is dropped
    # unless the other end runs NAPI, which a veth does only with an XDP program on it
    # (bpf/xvs_veth_pass.bpf.c; docs/architecture.md, "Fast path"). A real NIC needs
    # nothing of the kind.
    case $port in
        dir | dir2) ip -n "$sw" link set dev "$port" xdp obj "$PASS_OBJ" sec xdp ;;
    esac
    ip -n "$sw" link set "$port" up
}

new_ns() {
    local ns=$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# The client's router (--client-router): eth0 on the client bridge, eth1 a
# direct veth to the client's eth0.
setup_client_router() {
    local key
    new_ns "$P-crt"
    nsx "$P-crt" sysctl -qw net.ipv4.ip_forward=1
    add_port "$(client_switch)" crt "$P-crt" eth0 1 "$(mac_for "$CRT_LAN_IP")"
    nsx "$P-crt" ip addr add "$CRT_LAN_IP/$PREFIXLEN" dev eth0
    for key in all default eth0; do
        nsx "$P-crt" sysctl -qw "net.ipv4.conf.$key.rp_filter=0"
    done
    nsx "$P-crt" ip link set eth0 up
}

setup_client() {
    local ip
    new_ns "$P-client"
    if [[ $CLIENT_ROUTER == 1 ]]; then
        setup_client_router
        ip -n "$P-crt" link add eth1 address "$(mac_for "$CRT_CLIENT_IP")" type veth \
            peer name eth0 netns "$P-client" address "$(mac_for "$CLIENT_IP")"
        nsx "$P-crt" ip addr add "$CRT_CLIENT_IP/$CLIENT_PREFIXLEN" dev eth1
        nsx "$P-crt" sysctl -qw net.ipv4.conf.eth1.rp_filter=0
        nsx "$P-crt" ip link set eth1 up
    else
        add_port "$(client_switch)" client "$P-client" eth0 1 "$(mac_for "$CLIENT_IP")"
    fi
    nsx "$P-client" ip addr add "$CLIENT_IP/$CLIENT_PREFIXLEN" dev eth0
    for ip in "${CLIENT_EXTRA[@]}"; do
        nsx "$P-client" ip addr add "$ip/$CLIENT_PREFIXLEN" dev eth0
    done
    # xvs forwards frames byte-for-byte with AF_XDP. A local TCP/UDP stack on
    # veth leaves checksums partial (checksum offload: the "hardware" is
    # expected to finish them), and such frames would reach the real servers
    # with broken checksums. A real client's frames arrive over a wire with
    # full checksums; turning TX checksum offload off here makes the client
    # behave like one, so the harness reflects a real deployment.
    nsx "$P-client" ethtool -K eth0 tx off >/dev/null
    nsx "$P-client" ip link set eth0 up
    if [[ -n $CLIENT_GW ]]; then
        nsx "$P-client" ip route add default via "$CLIENT_GW" dev eth0
    fi
    if [[ -n $DIR_CLIENT_GW ]]; then
        # nat1: the VIP is in the real servers' subnet, one hop away.
        nsx "$P-client" ip route add "$VIP/32" via "$DIR_CLIENT_GW" dev eth0
    fi
}

setup_director() {
    local queues=$1
    new_ns "$P-dir"
    # Only xvs may move packets between client and real servers: if xvsd is
    # not running, nothing must leak through the director's kernel (this is the
    # namespace default; set anyway so the lab states it).
    nsx "$P-dir" sysctl -qw net.ipv4.ip_forward=0
    # DIP on eth0, VIP as /32 on eth0 so the director answers ARP for it.
    add_port "$(client_switch)" dir "$P-dir" eth0 "$queues" "$(mac_for "$DIP")"
    nsx "$P-dir" ip addr add "$DIP/$PREFIXLEN" dev eth0
    # An HA pair's VIP belongs to VRRP, which adds it to the master only.
    [[ $PAIR == 1 ]] || nsx "$P-dir" ip addr add "$VIP/32" dev eth0
    if [[ -n $DIR_CLIENT_GW ]]; then
        nsx "$P-dir" ip addr add "$DIR_CLIENT_GW/$CLIENT_PREFIXLEN" dev eth0
    fi
    nsx "$P-dir" ip link set eth0 up
    if [[ $DIR_INT_IF != eth0 ]]; then
        add_port "$(rs_switch)" dir "$P-dir" "$DIR_INT_IF" "$queues" "$(mac_for "$DIR_INT_IP")"
        nsx "$P-dir" ip addr add "$DIR_INT_IP/$RS_PREFIXLEN" dev "$DIR_INT_IF"
        nsx "$P-dir" ip link set "$DIR_INT_IF" up
    fi
    if [[ $CLIENT_ROUTER == 1 ]]; then
        nsx "$P-dir" ip route add "$CRT_NET" via "$CRT_LAN_IP" dev eth0
    fi
}

# --pair: the second director, like the first but for its address and the VIP.
setup_director2() {
    local queues=$1
    new_ns "$P-dir2"
    nsx "$P-dir2" sysctl -qw net.ipv4.ip_forward=0
    add_port "$(client_switch)" dir2 "$P-dir2" eth0 "$queues" "$(mac_for "$DIP2")"
    nsx "$P-dir2" ip addr add "$DIP2/$PREFIXLEN" dev eth0
    nsx "$P-dir2" ip link set eth0 up
    if [[ $DIR_INT_IF != eth0 ]]; then
        add_port "$(rs_switch)" dir2 "$P-dir2" "$DIR_INT_IF" "$queues" "$(mac_for "$DIR2_INT_IP")"
        nsx "$P-dir2" ip addr add "$DIR2_INT_IP/$RS_PREFIXLEN" dev "$DIR_INT_IF"
        nsx "$P-dir2" ip link set "$DIR_INT_IF" up
    fi
    # A real NIC drops unicast frames for other MACs before XDP sees them; a veth does
    # not. When the master dies, the switch forgets its MAC and floods the client's frames
    # for it to every port: without this, the backup's XDP program would take over the
    # dead master's traffic at once, long before VRRP moves the VIP, and a failover test
    # would measure the lab, not VRRP. So the directors' ports get no unknown unicast
    # (broadcast ARP and multicast VRRP and sync still arrive).
    # nat2: the same on the real servers' side, where a dead master's frames from the
    # real servers (to the gateway MAC it had) would otherwise reach the backup.
    local sw
    for sw in $(printf '%s\n' "$(client_switch)" "$(rs_switch)" | sort -u); do
        ip netns exec "$sw" bridge link set dev dir flood off
        ip netns exec "$sw" bridge link set dev dir2 flood off
    done
}

setup_router() {
    new_ns "$P-rtr"
    nsx "$P-rtr" sysctl -qw net.ipv4.ip_forward=1
    add_port "$P-sw" rtr "$P-rtr" eth0 1 "$(mac_for "$RTR_LAN_IP")"
    add_port "$P-swr" rtr "$P-rtr" eth1 1 "$(mac_for "$RTR_RS_IP")"
    nsx "$P-rtr" ip addr add "$RTR_LAN_IP/$PREFIXLEN" dev eth0
    nsx "$P-rtr" ip addr add "$RTR_RS_IP/$RS_PREFIXLEN" dev eth1
    # TUN replies come from the VIP (a LAN-side address) but arrive on eth1:
    # strict reverse-path filtering (kernel: max(all, interface)) would drop
    # them. Routers inside a site rarely check that; this one does not.
    local key
    for key in all default eth0 eth1; do
        nsx "$P-rtr" sysctl -qw "net.ipv4.conf.$key.rp_filter=0"
    done
    nsx "$P-rtr" ip link set eth0 up
    nsx "$P-rtr" ip link set eth1 up
    nsx "$P-dir" ip route add "${RTR_RS_IP%.*}.0/$RS_PREFIXLEN" via "$RTR_LAN_IP" dev eth0
    if [[ $CLIENT_ROUTER == 1 ]]; then
        nsx "$P-rtr" ip route add "$CRT_NET" via "$CRT_LAN_IP" dev eth0
    fi
}

# Real server k: namespace, address, routes, LVS real-server configuration
# (DR: VIP on lo; TUN: decapsulation + VIP on lo; NAT: nothing), servers.
setup_rs() {
    local k=$1 extras=$2 ns="$P-rs$1" ip also=()
    ip=$(rs_ip "$k")
    new_ns "$ns"
    add_port "$(rs_switch)" "rs$k" "$ns" eth0 1 "$(mac_for "$ip")"
    nsx "$ns" ip addr add "$ip/$RS_PREFIXLEN" dev eth0
    case "$TOPOLOGY" in
        dr) nsx "$ns" bash "$ROOT/scripts/rs-dr.sh" start "$VIP" ;;
        nat1 | nat2)
            # xvs rewrites these replies and sends them on byte-for-byte: they
            # must carry full checksums, as frames from a wire do (see the client).
            nsx "$ns" ethtool -K eth0 tx off >/dev/null
            ;;
    esac
    nsx "$ns" ip link set eth0 up
    if [[ -n $RS_GW ]]; then
        nsx "$ns" ip route add default via "$RS_GW" dev eth0
    fi
    if [[ $CLIENT_ROUTER == 1 && $TOPOLOGY == dr ]]; then
        # DR replies go straight to the client, through its router.
        nsx "$ns" ip route add "$CRT_NET" via "$CRT_LAN_IP" dev eth0
    fi
    if [[ $TOPOLOGY == tun ]]; then
        # rs-tun.sh finds eth0 through the default route, as on a real host.
        XVS_DECAP_OBJ=$DECAP_OBJ nsx "$ns" bash "$ROOT/scripts/rs-tun.sh" start "$VIP" >/dev/null ||
            die "rs$k: rs-tun.sh start $VIP failed"
    fi
    [[ $extras == 1 ]] && also=(--also-http "$ALT_HTTP_PORT")
    # setsid: not in the caller's process group (a ctrl-C aimed at a test
    # run must not kill the servers behind the harness's back); all three
    # stdio streams redirected so callers that capture our output don't
    # wait for the servers' end of the pipe.
    setsid ip netns exec "$ns" python3 "$ROOT/scripts/rs-http.py" "rs$k" "$HTTP_PORT" "$UDP_PORT" "${also[@]}" \
        </dev/null >"$STATE/rs$k.log" 2>&1 9>&- &
    echo $! >"$STATE/rs$k.pid"
    setsid ip netns exec "$ns" python3 "$ROOT/scripts/stream.py" server --port "$STREAM_PORT" \
        </dev/null >"$STATE/rs$k-stream.log" 2>&1 9>&- &
    echo $! >"$STATE/rs$k-stream.pid"
    if [[ $extras == 1 ]]; then
        # -D daemonizes (its own session) and writes the pidfile itself.
        nsx "$ns" iperf3 -s -D -p "$IPERF_PORT" -I "$STATE/rs$k-iperf.pid" \
            --logfile "$STATE/rs$k-iperf.log" </dev/null >/dev/null 2>&1 9>&- ||
            die "rs$k: iperf3 -s failed to start"
    fi
}

# The director's view of where a real server is, for the reachability checks.
check_topology() {
    local nrs=$1 extras=$2 k ip d tcp_ports="$HTTP_PORT" rt
    [[ $extras == 1 ]] && tcp_ports="$HTTP_PORT $ALT_HTTP_PORT"
    for ((k = 1; k <= nrs; k++)); do
        wait_listening "$P-rs$k" "$(cat "$STATE/rs$k.pid")" "$tcp_ports" || {
            cat "$STATE/rs$k.log" >&2 || true
            die "rs$k: no listener on tcp :${tcp_ports// /, :} / udp :$UDP_PORT (server died or 10 s passed)"
        }
        wait_tcp_port "$P-rs$k" "$STREAM_PORT" || {
            cat "$STATE/rs$k-stream.log" >&2 || true
            die "rs$k: stream.py not listening on tcp :$STREAM_PORT after 10 s"
        }
        if [[ $extras == 1 ]]; then
            wait_tcp_port "$P-rs$k" "$IPERF_PORT" || {
                cat "$STATE/rs$k-iperf.log" >&2 || true
                die "rs$k: iperf3 not listening on tcp :$IPERF_PORT after 10 s"
            }
        fi
    done
    case "$TOPOLOGY" in
        dr)
            for ((k = 1; k <= nrs; k++)); do
                ip=$(rs_ip "$k")
                check_http "$P-client" "$ip" "rs$k" || die "client cannot reach rs$k at $ip"
                check_http "$P-dir" "$ip" "rs$k" || die "director cannot reach rs$k at $ip"
                if [[ $PAIR == 1 ]]; then
                    check_http "$P-dir2" "$ip" "rs$k" || die "director 2 cannot reach rs$k at $ip"
                fi
                nsx "$P-rs$k" bash "$ROOT/scripts/rs-dr.sh" status "$VIP" >/dev/null ||
                    die "rs$k: rs-dr.sh status says not configured"
            done
            ;;
        nat2 | nat1 | tun)
            for ((k = 1; k <= nrs; k++)); do
                ip=$(rs_ip "$k")
                check_http "$P-dir" "$ip" "rs$k" || die "director cannot reach rs$k at $ip"
                if [[ $PAIR == 1 ]]; then
                    check_http "$P-dir2" "$ip" "rs$k" || die "director 2 cannot reach rs$k at $ip"
                fi
                if [[ $extras == 1 ]]; then
                    check_http "$P-dir" "$ip" "rs$k" "$ALT_HTTP_PORT" ||
                        die "director cannot reach rs$k at $ip:$ALT_HTTP_PORT"
                fi
                rt=$(nsx "$P-rs$k" ip -4 route show default)
                [[ $rt == "default via $RS_GW dev eth0"* ]] ||
                    die "rs$k: default route is '$rt', expected via $RS_GW"
                if [[ $TOPOLOGY == tun ]]; then
                    nsx "$P-rs$k" bash "$ROOT/scripts/rs-tun.sh" status "$VIP" >/dev/null ||
                        die "rs$k: rs-tun.sh status says not configured"
                elif [[ -n $(nsx "$P-rs$k" ip -4 -o addr show to "$VIP/32") ]]; then
                    die "rs$k: holds the VIP, a NAT real server must not"
                fi
            done
            if [[ $TOPOLOGY == nat1 ]]; then
                check_ping "$P-client" "$DIR_CLIENT_GW" || die "client cannot reach the director at $DIR_CLIENT_GW"
                check_ping "$P-client" "$VIP" || die "client cannot reach the VIP $VIP through its route"
            else
                check_ping "$P-client" "$DIP" || die "client cannot reach the director at $DIP"
            fi
            [[ $(nsx "$P-dir" sysctl -n net.ipv4.ip_forward) == 0 ]] || die "director forwards (ip_forward=1)"
            if [[ $PAIR == 1 ]]; then
                check_ping "$P-client" "$DIP2" || die "client cannot reach director 2 at $DIP2"
                [[ $(nsx "$P-dir2" sysctl -n net.ipv4.ip_forward) == 0 ]] || die "director 2 forwards (ip_forward=1)"
                for d in "$P-dir" "$P-dir2"; do
                    [[ -z $(nsx "$d" ip -4 -o addr show to "$VIP/32") && -z $(nsx "$d" ip -4 -o addr show to "$RS_GW/32") ]] ||
                        die "$d holds $VIP or $RS_GW: with --pair they belong to VRRP"
                done
            fi
            ;;
    esac
}

do_up() {
    local nrs=3 queues=1 extras="" topo=dr crt=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --rs)
                [[ $# -ge 2 ]] || { usage; exit 2; }
                nrs=$2
                shift 2
                ;;
            --queues)
                [[ $# -ge 2 ]] || { usage; exit 2; }
                queues=$2
                shift 2
                ;;
            --topology)
                [[ $# -ge 2 ]] || { usage; exit 2; }
                topo=$2
                shift 2
                ;;
            --topology=*)
                topo=${1#*=}
                shift
                ;;
            --extras)
                extras=1
                shift
                ;;
            --client-router)
                crt=1
                shift
                ;;
            --pair)
                PAIR=1
                shift
                ;;
            --directors)
                [[ $# -ge 2 ]] || { usage; exit 2; }
                case "$2" in
                    1) PAIR=0 ;;
                    2) PAIR=1 ;;
                    *) die "--directors must be 1 or 2 (got '$2')" ;;
                esac
                shift 2
                ;;
            -h | --help) usage; exit 0 ;;
            *) usage; exit 2 ;;
        esac
    done
    set_topology "$topo" || die "--topology must be dr, nat2, nat1 or tun (got '$topo')"
    if [[ $PAIR == 1 && $TOPOLOGY != dr && $TOPOLOGY != nat2 ]]; then
        die "--pair: only with --topology dr or nat2"
    fi
    if [[ $PAIR == 1 && $TOPOLOGY == nat2 ]]; then
        # The gateway address moves with VRRP; each director has its own.
        DIR_INT_IP=192.168.80.2
        DIR2_INT_IP=192.168.80.3
    fi
    if [[ $crt == 1 ]]; then
        set_client_router || die "--client-router: not with --topology nat1"
    fi
    if [[ -z $extras ]]; then
        # Extra listeners change nothing DR tests see, but keep dr as it was.
        if [[ $TOPOLOGY == dr ]]; then extras=0; else extras=1; fi
    fi
    if ! [[ $nrs =~ ^[0-9]+$ ]] || ((nrs < 1 || nrs > MAX_RS)); then
        die "--rs must be 1..$MAX_RS (got $nrs)"
    fi
    if ! [[ $queues =~ ^[0-9]+$ ]] || ((queues < 1 || queues > 64)); then
        die "--queues must be 1..64 (got $queues)"
    fi
    local tools=(ip ss curl ethtool python3 sysctl) tool
    [[ $PAIR == 1 ]] && tools+=(bridge)
    [[ $TOPOLOGY == dr ]] || tools+=(ping)
    [[ $extras == 1 ]] && tools+=(iperf3)
    [[ $TOPOLOGY == tun ]] && tools+=(tc)
    tools+=(clang)
    for tool in "${tools[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/deps.sh)"
    done
    if [[ $TOPOLOGY == tun && -n ${XVS_DECAP_OBJ:-} && ! -f $XVS_DECAP_OBJ ]]; then
        die "XVS_DECAP_OBJ=$XVS_DECAP_OBJ: no such file"
    fi

    do_down
    mkdir -p "$STATE"

    # If anything below fails (or we are interrupted), leave nothing
    # half-built behind.
    UP_DONE=0
    trap 'if [[ $UP_DONE != 1 ]]; then log "up failed; tearing down"; do_down; fi' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # The director ports' pass-all XDP program (see add_port).
    PASS_OBJ="$STATE/xvs_veth_pass.o"
    clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
        -c "$ROOT/bpf/xvs_veth_pass.bpf.c" -o "$PASS_OBJ" || die "clang failed to build bpf/xvs_veth_pass.bpf.c"

    DECAP_OBJ=""
    if [[ $TOPOLOGY == tun ]]; then
        # Build the decapsulation program once for all real servers (rs-tun.sh
        # would otherwise build it on its own; it is only used without ipip).
        if [[ -n ${XVS_DECAP_OBJ:-} ]]; then
            DECAP_OBJ=$XVS_DECAP_OBJ
        else
            DECAP_OBJ="$STATE/xvs_decap.o"
            clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
                -c "$ROOT/bpf/xvs_decap.bpf.c" -o "$DECAP_OBJ" || die "clang failed to build bpf/xvs_decap.bpf.c"
        fi
    fi

    local k
    new_switch "$(client_switch)"
    [[ $(rs_switch) == "$(client_switch)" ]] || new_switch "$(rs_switch)"
    setup_client
    setup_director "$queues"
    [[ $PAIR == 1 ]] && setup_director2 "$queues"
    [[ $TOPOLOGY == tun ]] && setup_router
    for ((k = 1; k <= nrs; k++)); do
        setup_rs "$k" "$extras"
    done

    check_topology "$nrs" "$extras"
    # The checks above filled the director's neighbour cache; empty it so xvsd
    # starts like on a freshly booted director and must resolve MACs itself.
    nsx "$P-dir" ip neigh flush all >/dev/null 2>&1 || true
    [[ $PAIR == 1 ]] && { nsx "$P-dir2" ip neigh flush all >/dev/null 2>&1 || true; }

    write_topology "$nrs" "$queues" "$extras"
    UP_DONE=1
    print_topology
}

mac_of() { nsx "$1" cat "/sys/class/net/$2/address"; }

write_topology() {
    local nrs=$1 queues=$2 extras=$3 k ip method=""
    if [[ $TOPOLOGY == tun ]]; then
        method=$(nsx "$P-rs1" bash "$ROOT/scripts/rs-tun.sh" status "$VIP" 2>/dev/null |
            sed -n 's/^method: *\([a-z]*\).*/\1/p')
    fi
    {
        echo "PREFIX=$P"
        echo "TOPOLOGY=$TOPOLOGY"
        echo "SW_NS=$(client_switch)"
        echo "SW_INT_NS=$(rs_switch)"
        echo "CLIENT_NS=$P-client"
        echo "CLIENT_IF=eth0"
        echo "CLIENT_IP=$CLIENT_IP"
        echo "CLIENT_PREFIXLEN=$CLIENT_PREFIXLEN"
        echo "CLIENT_EXTRA_IPS=\"${CLIENT_EXTRA[*]}\""
        echo "CLIENT_MAC=$(mac_of "$P-client" eth0)"
        echo "CLIENT_GW=$CLIENT_GW"
        echo "CLIENT_VIP_VIA=$DIR_CLIENT_GW"
        echo "DIR_NS=$P-dir"
        echo "DIR_IF=eth0"
        echo "DIR_IP=$DIP"
        echo "DIR_MAC=$(mac_of "$P-dir" eth0)"
        echo "DIR_EXT_IF=eth0"
        echo "DIR_EXT_IP=$DIP"
        echo "DIR_EXT_MAC=$(mac_of "$P-dir" eth0)"
        echo "DIR_INT_IF=$DIR_INT_IF"
        echo "DIR_INT_IP=$DIR_INT_IP"
        echo "DIR_INT_MAC=$(mac_of "$P-dir" "$DIR_INT_IF")"
        echo "DIR_CLIENT_GW_IP=$DIR_CLIENT_GW"
        echo "DIR_QUEUES=$queues"
        echo "PAIR=$PAIR"
        if [[ $PAIR == 1 ]]; then
            echo "DIR2_NS=$P-dir2"
            echo "DIR2_IP=$DIP2"
            echo "DIR2_MAC=$(mac_of "$P-dir2" eth0)"
            echo "DIR2_INT_IP=${DIR2_INT_IP:-$DIP2}"
            echo "DIR2_INT_MAC=$(mac_of "$P-dir2" "$DIR_INT_IF")"
        else
            echo "DIR2_NS="
            echo "DIR2_IP="
            echo "DIR2_MAC="
            echo "DIR2_INT_IP="
            echo "DIR2_INT_MAC="
        fi
        echo "STREAM_PORT=$STREAM_PORT"
        echo "VIP=$VIP"
        echo "HTTP_PORT=$HTTP_PORT"
        echo "UDP_PORT=$UDP_PORT"
        if [[ $extras == 1 ]]; then
            echo "ALT_HTTP_PORT=$ALT_HTTP_PORT"
            echo "IPERF_PORT=$IPERF_PORT"
        else
            echo "ALT_HTTP_PORT="
            echo "IPERF_PORT="
        fi
        if [[ $TOPOLOGY == tun ]]; then
            echo "RTR_NS=$P-rtr"
            echo "RTR_LAN_IF=eth0"
            echo "RTR_LAN_IP=$RTR_LAN_IP"
            echo "RTR_LAN_MAC=$(mac_of "$P-rtr" eth0)"
            echo "RTR_RS_IF=eth1"
            echo "RTR_RS_IP=$RTR_RS_IP"
            echo "RTR_RS_MAC=$(mac_of "$P-rtr" eth1)"
        else
            echo "RTR_NS="
            echo "RTR_LAN_IF="
            echo "RTR_LAN_IP="
            echo "RTR_LAN_MAC="
            echo "RTR_RS_IF="
            echo "RTR_RS_IP="
            echo "RTR_RS_MAC="
        fi
        if [[ $CLIENT_ROUTER == 1 ]]; then
            echo "CRT_NS=$P-crt"
            echo "CRT_LAN_IP=$CRT_LAN_IP"
            echo "CRT_CLIENT_IP=$CRT_CLIENT_IP"
        else
            echo "CRT_NS="
            echo "CRT_LAN_IP="
            echo "CRT_CLIENT_IP="
        fi
        echo "TUN_DECAP=$method"
        echo "RS_PREFIXLEN=$RS_PREFIXLEN"
        echo "RS_GW=$RS_GW"
        echo "RS_COUNT=$nrs"
        for ((k = 1; k <= nrs; k++)); do
            ip=$(rs_ip "$k")
            echo "RS${k}_NS=$P-rs$k"
            echo "RS${k}_IP=$ip"
            echo "RS${k}_MAC=$(mac_of "$P-rs$k" eth0)"
            echo "RS${k}_PID=$(cat "$STATE/rs$k.pid")"
            echo "RS${k}_IPERF_PID=$(cat "$STATE/rs$k-iperf.pid" 2>/dev/null || true)"
            echo "RS${k}_STREAM_PID=$(cat "$STATE/rs$k-stream.pid")"
        done
    } >"$STATE/topology"
}

# shellcheck disable=SC2153 # the variables come from the sourced topology file
print_topology() {
    # shellcheck disable=SC1091
    . "$STATE/topology"
    local k ns ip mac f='  %-7s %-12s %-4s %-18s %s\n' rsdesc servers
    echo "harness $P up: topology $TOPOLOGY, $RS_COUNT real servers, director queues $DIR_QUEUES, state in $STATE"
    # shellcheck disable=SC2059
    {
        printf "$f" role netns if mac addresses
        printf "$f" client "$CLIENT_NS" eth0 "$CLIENT_MAC" "$CLIENT_IP/$CLIENT_PREFIXLEN + ${CLIENT_EXTRA[*]}${CLIENT_GW:+, default via $CLIENT_GW}${CLIENT_VIP_VIA:+, $VIP via $CLIENT_VIP_VIA}"
        case "$TOPOLOGY" in
            nat2)
                if [[ $PAIR == 1 ]]; then
                    printf "$f" dir "$DIR_NS" eth0 "$DIR_EXT_MAC" "$DIR_EXT_IP/$PREFIXLEN, VIP $VIP/32 by VRRP (on $SW_NS)"
                    printf "$f" dir "$DIR_NS" eth1 "$DIR_INT_MAC" "$DIR_INT_IP/$RS_PREFIXLEN, $RS_GW/32 by VRRP (on $SW_INT_NS)"
                    printf "$f" dir2 "$DIR2_NS" eth0 "$DIR2_MAC" "$DIR2_IP/$PREFIXLEN, VIP $VIP/32 by VRRP (on $SW_NS)"
                    printf "$f" dir2 "$DIR2_NS" eth1 "$DIR2_INT_MAC" "$DIR2_INT_IP/$RS_PREFIXLEN, $RS_GW/32 by VRRP (on $SW_INT_NS)"
                else
                    printf "$f" dir "$DIR_NS" eth0 "$DIR_EXT_MAC" "$DIR_EXT_IP/$PREFIXLEN, VIP $VIP/32 (on $SW_NS)"
                    printf "$f" dir "$DIR_NS" eth1 "$DIR_INT_MAC" "$DIR_INT_IP/$RS_PREFIXLEN (on $SW_INT_NS)"
                fi
                ;;
            nat1)
                printf "$f" dir "$DIR_NS" eth0 "$DIR_MAC" "DIP $DIR_IP/$PREFIXLEN, VIP $VIP/32, $DIR_CLIENT_GW_IP/$CLIENT_PREFIXLEN"
                ;;
            *)
                if [[ $PAIR == 1 ]]; then
                    printf "$f" dir "$DIR_NS" eth0 "$DIR_MAC" "DIP $DIR_IP/$PREFIXLEN, VIP $VIP/32 by VRRP"
                    printf "$f" dir2 "$DIR2_NS" eth0 "$DIR2_MAC" "DIP2 $DIR2_IP/$PREFIXLEN, VIP $VIP/32 by VRRP"
                else
                    printf "$f" dir "$DIR_NS" eth0 "$DIR_MAC" "DIP $DIR_IP/$PREFIXLEN, VIP $VIP/32"
                fi
                ;;
        esac
        if [[ $TOPOLOGY == tun ]]; then
            printf "$f" rtr "$RTR_NS" eth0 "$RTR_LAN_MAC" "$RTR_LAN_IP/$PREFIXLEN (on $SW_NS), forwarding"
            printf "$f" rtr "$RTR_NS" eth1 "$RTR_RS_MAC" "$RTR_RS_IP/$RS_PREFIXLEN (on $SW_INT_NS)"
        fi
        servers="http :$HTTP_PORT${ALT_HTTP_PORT:+ :$ALT_HTTP_PORT} udp :$UDP_PORT${IPERF_PORT:+ iperf3 :$IPERF_PORT} stream :$STREAM_PORT"
        case "$TOPOLOGY" in
            dr) rsdesc="VIP $VIP/32 on lo" ;;
            tun) rsdesc="default via $RS_GW, VIP $VIP/32 on lo, decap $TUN_DECAP" ;;
            *) rsdesc="default via $RS_GW" ;;
        esac
        for ((k = 1; k <= RS_COUNT; k++)); do
            eval "ns=\$RS${k}_NS ip=\$RS${k}_IP mac=\$RS${k}_MAC"
            printf "$f" "rs$k" "$ns" eth0 "$mac" "RIP $ip/$RS_PREFIXLEN, $rsdesc, $servers"
        done
    }
}

do_status() {
    local nss ns ok=0 pid tcp_ports="$HTTP_PORT" topo=""
    mapfile -t nss < <(our_namespaces)
    if [[ ${#nss[@]} -eq 0 ]]; then
        echo "harness $P: down (no namespaces)"
        return 1
    fi
    if [[ -f $STATE/topology ]]; then
        topo=$(sed -n 's/^TOPOLOGY=//p' "$STATE/topology")
        local alt iperf
        alt=$(sed -n 's/^ALT_HTTP_PORT=//p' "$STATE/topology")
        iperf=$(sed -n 's/^IPERF_PORT=//p' "$STATE/topology")
        tcp_ports="$HTTP_PORT${alt:+ $alt}${iperf:+ $iperf} $STREAM_PORT"
    fi
    echo "harness $P: ${topo:+topology $topo, }namespaces: ${nss[*]}"
    for ns in "${nss[@]}"; do
        case "$ns" in
            "$P"-rs*)
                local k=${ns#"$P"-rs} tcp="" udp port l
                for port in $tcp_ports; do
                    l=$(nsx "$ns" ss -Hltn "sport = :$port" 2>/dev/null | awk '{print $4}' | paste -sd' ')
                    [[ -n $l ]] || ok=1
                    tcp+="${tcp:+ }${l:-none(:$port)}"
                done
                udp=$(nsx "$ns" ss -Hlun "sport = :$UDP_PORT" 2>/dev/null | awk '{print $4}' | paste -sd' ')
                pid=$(cat "$STATE/rs$k.pid" 2>/dev/null || echo -)
                printf '  %-12s %-18s tcp[%s] udp[%s] pid %s\n' "$ns" \
                    "$(nsx "$ns" ip -4 -br addr show dev eth0 2>/dev/null | awk '{print $3}')" "$tcp" "${udp:-none}" "$pid"
                [[ -n $udp ]] || ok=1
                ;;
            *)
                printf '  %-12s %s\n' "$ns" "$(nsx "$ns" ip -4 -br addr show 2>/dev/null | awk '$1 != "lo" {$2=""; print}' | paste -sd';')"
                ;;
        esac
    done
    return $ok
}

[[ $# -ge 1 ]] || { usage; exit 2; }
cmd=$1
shift
case "$cmd" in
    up | down | status) ;;
    -h | --help) usage; exit 0 ;;
    *) usage; exit 2 ;;
esac
[[ $P =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{0,19}$ ]] || die "XVS_NS_PREFIX must be 1-20 of [A-Za-z0-9_-] (got '$P')"
[[ $(id -u) -eq 0 ]] || die "must run as root (creates network namespaces)"

# One harness operation per prefix at a time.
mkdir -p "$STATE_BASE"
exec 9>"$STATE_BASE/$P.lock"
flock -w 60 9 || die "another harness.sh is busy with prefix $P (lock $STATE_BASE/$P.lock)"

case "$cmd" in
    up) do_up "$@" ;;
    down)
        [[ $# -eq 0 ]] || { usage; exit 2; }
        do_down
        ;;
    status) do_status ;;
esac
