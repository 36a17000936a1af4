#!/usr/bin/env bash
# The classic LVS-DR lab on one L2 segment, built from network namespaces.
#
# Usage: scripts/harness.sh up [--rs N] [--queues Q]
#        scripts/harness.sh down
#        scripts/harness.sh status   (exit 0 when up and every RS listens)
#
# Topology (P = $XVS_NS_PREFIX, default "xvs"):
#
#   P-sw      bridge br0 (STP off, forward_delay 0); one port per namespace below
#   P-client  eth0 02:00:0a:00:00:64  10.0.0.100/24, also 10.0.0.101-104/24
#   P-dir     eth0 02:00:0a:00:00:0c  DIP 10.0.0.12/24, VIP 10.0.0.88/32
#             (Q rx/tx queues on both ends of its veth, --queues, default 1)
#   P-rsK     eth0 02:00:0a:00:00:XX  RIP 10.0.0.9 (rs1), 10.0.0.20 (rs2),
#             10.0.0.21 (rs3), 10.0.0.22 ... (rsK = 10.0.0.(18+K) for K >= 2);
#             VIP on lo via scripts/rs-dr.sh, and scripts/rs-http.py rsK 80 5353
#             (HTTP on :80, UDP on :5353, both answer "rsK\n").
#
# IPv6 is disabled in every namespace so that router solicitations, MLD and
# DAD frames do not show up as noise in the director's traffic.
#
# State (pidfiles, server logs, a sourceable topology file) lives in
# /run/xvs-harness/P/: rsK.pid, rsK.log, topology. `up` first removes what an
# earlier run with the same prefix left behind; `down` tolerates any partial
# state and always succeeds. `down` stops every process still running inside
# the prefix's namespaces (for example an xvsd started in P-dir) before it
# deletes them.
#
# Environment:
#   XVS_NS_PREFIX  namespace name prefix (default xvs); letters, digits, _ and -
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P=${XVS_NS_PREFIX:-xvs}
STATE_BASE=/run/xvs-harness
STATE=$STATE_BASE/$P

VIP=10.0.0.88
DIP=10.0.0.12
CLIENT_IP=10.0.0.100
CLIENT_EXTRA=(10.0.0.101 10.0.0.102 10.0.0.103 10.0.0.104)
PREFIXLEN=24
HTTP_PORT=80
UDP_PORT=5353
MAX_RS=60 # rsK = 10.0.0.(18+K): stays below the VIP (.88) and the clients (.100+)

usage() {
    cat >&2 <<EOF
usage: $0 up [--rs N] [--queues Q]
       $0 down
       $0 status
  Builds (up), removes (down) or shows (status) the LVS-DR namespace lab:
  ${P}-sw (bridge), ${P}-client, ${P}-dir, ${P}-rs1..N.
  --rs N       number of real servers (default 3, at most $MAX_RS)
  --queues Q   rx/tx queues of the director's veth (default 1)
  env XVS_NS_PREFIX   namespace prefix (now: $P)
EOF
}

die() {
    echo "harness.sh: error: $*" >&2
    exit 1
}

log() { echo "harness.sh[$P]: $*" >&2; }

nsx() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

rs_ip() {
    local k=$1
    if ((k == 1)); then echo 10.0.0.9; else echo "10.0.0.$((18 + k))"; fi
}

# Deterministic MACs make captures and packet assertions easy to read:
# 02:00 (locally administered) + the IPv4 address's last three octets.
mac_for() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    printf '02:00:%02x:%02x:%02x:%02x\n' "$a" "$b" "$c" "$d"
}

# Every namespace that belongs to this prefix, including leftovers.
our_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' |
        grep -E "^${P}-(sw|client|dir|rs[0-9]+)\$" || true
}

# Send TERM (then KILL) to a list of pids; bounded wait, never fails.
kill_pids() {
    local pids=("$@") pid i alive
    [[ ${#pids[@]} -gt 0 ]] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do # 30 x 0.1 s
        alive=()
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive+=("$pid")
        done
        [[ ${#alive[@]} -eq 0 ]] && return 0
        sleep 0.1
    done
    kill -KILL "${alive[@]}" 2>/dev/null || true
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
            if [[ $pid =~ ^[0-9]+$ ]] && grep -qa rs-http.py "/proc/$pid/cmdline" 2>/dev/null; then
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
    # 3. Undo rs-dr.sh (drops its saved-sysctl file), then delete namespaces;
    #    the veths and the bridge go with them.
    for ns in $(our_namespaces); do
        if [[ $ns == "$P"-rs* ]]; then
            nsx "$ns" bash "$ROOT/scripts/rs-dr.sh" stop >/dev/null 2>&1
        fi
        ip netns del "$ns" 2>/dev/null || log "warning: could not delete namespace $ns"
    done
    rm -rf "$STATE"
    set -e
    return 0
}

# Wait (bounded) until a TCP and a UDP listener exist on the ports in a
# namespace; give up early if the server process $2 has died.
wait_listening() {
    local ns=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do # 100 x 0.1 s = 10 s
        if [[ -n $(nsx "$ns" ss -Hltn "sport = :$HTTP_PORT") && -n $(nsx "$ns" ss -Hlun "sport = :$UDP_PORT") ]]; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# curl from namespace $1 to http://$2/ and expect body $3; a few tries.
check_http() {
    local ns=$1 ip=$2 want=$3 got="" i
    for ((i = 0; i < 3; i++)); do
        got=$(nsx "$ns" curl -s --max-time 2 "http://$ip:$HTTP_PORT/" 2>/dev/null || true)
        [[ $got == "$want" ]] && return 0
        sleep 0.2
    done
    log "$ns: http://$ip:$HTTP_PORT/ answered '${got}', expected '$want'"
    return 1
}

# Create a veth whose bridge end is "$2" in the switch namespace and whose
# other end is eth0 in namespace $1; optional $3 = queue count.
add_port() {
    local ns=$1 port=$2 q=${3:-1} mac=$4
    ip -n "$P-sw" link add "$port" numrxqueues "$q" numtxqueues "$q" type veth \
        peer name eth0 netns "$ns" numrxqueues "$q" numtxqueues "$q" address "$mac"
    ip -n "$P-sw" link set "$port" master br0
    ip -n "$P-sw" link set "$port" up
}

new_ns() {
    local ns=$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

do_up() {
    local nrs=3 queues=1
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
            -h | --help) usage; exit 0 ;;
            *) usage; exit 2 ;;
        esac
    done
    [[ $nrs =~ ^[0-9]+$ ]] && ((nrs >= 1 && nrs <= MAX_RS)) || die "--rs must be 1..$MAX_RS (got $nrs)"
    [[ $queues =~ ^[0-9]+$ ]] && ((queues >= 1 && queues <= 64)) || die "--queues must be 1..64 (got $queues)"
    for tool in ip ss curl ethtool python3 sysctl; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/deps.sh)"
    done

    do_down
    mkdir -p "$STATE"

    # If anything below fails (or we are interrupted), leave nothing
    # half-built behind.
    UP_DONE=0
    trap 'if [[ $UP_DONE != 1 ]]; then log "up failed; tearing down"; do_down; fi' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local k ns ip
    new_ns "$P-sw"
    # forward_delay 0: the default (15 s, even with STP off) keeps new ports in
    # the learning state and black-holes traffic for about 30 s.
    ip -n "$P-sw" link add br0 type bridge forward_delay 0 stp_state 0
    # A switch forwards frames without looking at them. With br_netfilter loaded the
    # bridge would run bridged IPv4 through netfilter and drop malformed IP headers,
    # so tests could never deliver a bad frame to the director: switch that off here.
    for t in iptables ip6tables arptables; do
        ip netns exec "$P-sw" sysctl -qw "net.bridge.bridge-nf-call-$t=0" 2>/dev/null || true
    done
    ip -n "$P-sw" link set br0 up

    # Client.
    new_ns "$P-client"
    add_port "$P-client" client 1 "$(mac_for $CLIENT_IP)"
    nsx "$P-client" ip addr add "$CLIENT_IP/$PREFIXLEN" dev eth0
    for ip in "${CLIENT_EXTRA[@]}"; do
        nsx "$P-client" ip addr add "$ip/$PREFIXLEN" dev eth0
    done
    # xvs forwards frames byte-for-byte with AF_XDP. A local TCP/UDP stack on
    # veth leaves checksums partial (checksum offload: the "hardware" is
    # expected to finish them), and such frames would reach the real servers
    # with broken checksums. A real client's frames arrive over a wire with
    # full checksums; turning TX checksum offload off here makes the client
    # behave like one, so the harness reflects a real deployment. (Only the
    # client's frames go through the director; replies go RS -> client direct.)
    nsx "$P-client" ethtool -K eth0 tx off >/dev/null
    nsx "$P-client" ip link set eth0 up

    # Director: DIP on eth0, VIP as /32 on eth0 so the director answers ARP for it.
    new_ns "$P-dir"
    add_port "$P-dir" dir "$queues" "$(mac_for $DIP)"
    nsx "$P-dir" ip addr add "$DIP/$PREFIXLEN" dev eth0
    nsx "$P-dir" ip addr add "$VIP/32" dev eth0
    nsx "$P-dir" ip link set eth0 up

    # Real servers.
    for ((k = 1; k <= nrs; k++)); do
        ns="$P-rs$k"
        ip=$(rs_ip "$k")
        new_ns "$ns"
        add_port "$ns" "rs$k" 1 "$(mac_for "$ip")"
        nsx "$ns" ip addr add "$ip/$PREFIXLEN" dev eth0
        nsx "$ns" bash "$ROOT/scripts/rs-dr.sh" start "$VIP"
        nsx "$ns" ip link set eth0 up
        # setsid: not in the caller's process group (a ctrl-C aimed at a test
        # run must not kill the servers behind the harness's back); all three
        # stdio streams redirected so callers that capture our output don't
        # wait for the servers' end of the pipe.
        setsid ip netns exec "$ns" python3 "$ROOT/scripts/rs-http.py" "rs$k" "$HTTP_PORT" "$UDP_PORT" \
            </dev/null >"$STATE/rs$k.log" 2>&1 9>&- &
        echo $! >"$STATE/rs$k.pid"
    done

    for ((k = 1; k <= nrs; k++)); do
        wait_listening "$P-rs$k" "$(cat "$STATE/rs$k.pid")" || {
            cat "$STATE/rs$k.log" >&2 || true
            die "rs$k: no listener on tcp :$HTTP_PORT / udp :$UDP_PORT (server died or 10 s passed)"
        }
    done
    for ((k = 1; k <= nrs; k++)); do
        ip=$(rs_ip "$k")
        check_http "$P-client" "$ip" "rs$k" || die "client cannot reach rs$k at $ip"
        check_http "$P-dir" "$ip" "rs$k" || die "director cannot reach rs$k at $ip"
        nsx "$P-rs$k" bash "$ROOT/scripts/rs-dr.sh" status "$VIP" >/dev/null ||
            die "rs$k: rs-dr.sh status says not configured"
    done
    # The director check above filled its neighbour cache; empty it so xvsd
    # starts like on a freshly booted director and must resolve RS MACs itself.
    nsx "$P-dir" ip neigh flush dev eth0 >/dev/null 2>&1 || true

    write_topology "$nrs" "$queues"
    UP_DONE=1
    print_topology
}

write_topology() {
    local nrs=$1 queues=$2 k ip
    {
        echo "PREFIX=$P"
        echo "SW_NS=$P-sw"
        echo "CLIENT_NS=$P-client"
        echo "CLIENT_IF=eth0"
        echo "CLIENT_IP=$CLIENT_IP"
        echo "CLIENT_EXTRA_IPS=\"${CLIENT_EXTRA[*]}\""
        echo "CLIENT_MAC=$(nsx "$P-client" cat /sys/class/net/eth0/address)"
        echo "DIR_NS=$P-dir"
        echo "DIR_IF=eth0"
        echo "DIR_IP=$DIP"
        echo "DIR_MAC=$(nsx "$P-dir" cat /sys/class/net/eth0/address)"
        echo "DIR_QUEUES=$queues"
        echo "VIP=$VIP"
        echo "HTTP_PORT=$HTTP_PORT"
        echo "UDP_PORT=$UDP_PORT"
        echo "RS_COUNT=$nrs"
        for ((k = 1; k <= nrs; k++)); do
            ip=$(rs_ip "$k")
            echo "RS${k}_NS=$P-rs$k"
            echo "RS${k}_IP=$ip"
            echo "RS${k}_MAC=$(nsx "$P-rs$k" cat /sys/class/net/eth0/address)"
            echo "RS${k}_PID=$(cat "$STATE/rs$k.pid")"
        done
    } >"$STATE/topology"
}

print_topology() {
    # shellcheck disable=SC1091
    . "$STATE/topology"
    local k ns ip mac
    echo "harness $P up: $RS_COUNT real servers, director queues $DIR_QUEUES, state in $STATE"
    printf '  %-7s %-12s %-4s %-18s %s\n' role netns if mac addresses
    printf '  %-7s %-12s %-4s %-18s %s\n' client "$CLIENT_NS" eth0 "$CLIENT_MAC" "$CLIENT_IP/$PREFIXLEN + ${CLIENT_EXTRA[*]}"
    printf '  %-7s %-12s %-4s %-18s %s\n' dir "$DIR_NS" eth0 "$DIR_MAC" "DIP $DIR_IP/$PREFIXLEN, VIP $VIP/32"
    for ((k = 1; k <= RS_COUNT; k++)); do
        eval "ns=\$RS${k}_NS ip=\$RS${k}_IP mac=\$RS${k}_MAC"
        printf '  %-7s %-12s %-4s %-18s %s\n' "rs$k" "$ns" eth0 "$mac" "RIP $ip/$PREFIXLEN, VIP $VIP/32 on lo, http :$HTTP_PORT udp :$UDP_PORT"
    done
}

do_status() {
    local nss ns ok=0 pid
    mapfile -t nss < <(our_namespaces)
    if [[ ${#nss[@]} -eq 0 ]]; then
        echo "harness $P: down (no namespaces)"
        return 1
    fi
    echo "harness $P: namespaces: ${nss[*]}"
    for ns in "${nss[@]}"; do
        case "$ns" in
            "$P"-rs*)
                local k=${ns#"$P"-rs} tcp udp
                tcp=$(nsx "$ns" ss -Hltn "sport = :$HTTP_PORT" 2>/dev/null | awk '{print $4}' | paste -sd' ')
                udp=$(nsx "$ns" ss -Hlun "sport = :$UDP_PORT" 2>/dev/null | awk '{print $4}' | paste -sd' ')
                pid=$(cat "$STATE/rs$k.pid" 2>/dev/null || echo -)
                printf '  %-12s %-18s tcp[%s] udp[%s] pid %s\n' "$ns" \
                    "$(nsx "$ns" ip -4 -br addr show dev eth0 2>/dev/null | awk '{print $3}')" "${tcp:-none}" "${udp:-none}" "$pid"
                [[ -n $tcp && -n $udp ]] || ok=1
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
