#!/usr/bin/env bash
# Forwarding benchmarks of xvs on a veth topology, with three references
# measured in the same run: xvs's own AF_XDP reflect path, an in-kernel XDP_TX
# MAC-rewrite forwarder (the machine's ceiling) and the kernel doing the job
# with nftables DNAT. Prints a table and writes it into the
# "Forwarding (scripts/bench.sh)" section of docs/benchmarks.md.
#
# Usage: scripts/bench.sh [--smoke] [--rounds N] [--rows LIST] [--conns]
#                         [--no-build] [--no-docs] [--size BYTES] [--flows N]
#
#   --smoke     one short round of every row (about 30 s after the build),
#               table printed, docs/benchmarks.md left alone (for CI)
#   --rounds N  clean rounds wanted (default 5); every round runs every row
#               once, so the VM's fast and slow phases hit all rows alike. A
#               round during which other load ran on the machine is repeated
#               (at most 2N rounds in all) and left out of the table.
#   --rows LIST comma-separated subset of: reflect,xdptx,dr,health,loss,nat,tun,new,mix,nft,mq,lat
#               (default: all)
#   --conns     also the connection-table rows: DR with 10M live entries vs
#               1k (same table size), bytes per entry, and the memory of xvsd
#               (resident) plus its BPF maps (memlock of every map fd it holds)
#               against issue 11's 2 GiB (about 3 minutes). The 10M entries are
#               created at 80% of the run's median `new` rate (the new-connection
#               path is what creates them; 60% of the DR rate without a `new` row)
#   --fast-path-max N  xvsd --fast-path-max N for the connection-table rows
#               (default: the flow map has --conn-max entries)
#   --no-build  use the binaries in target/release as they are
#   --no-docs   do not write docs/benchmarks.md
#   --size B    frame size on the wire, FCS included (default 64)
#   --flows N   established flows (default 1024)
#
# Rows (UDP, established flows, unless noted). The generator is xvs-bench
# (BPF_PROG_RUN live frames) on CPU 1; xvsd's worker and the director's NAPI
# kthreads on CPU 0; the sink (an XDP counter) counts forwarded frames per real
# server where they arrive (scripts/bench-topo.sh):
#   reflect  xvsd --reflect: AF_XDP receive and send back, no LB work
#   xdptx    xvsd stopped; bpf/bench_xdp_tx.bpf.c on the director's eth0: pick
#            one of the 4 DR real servers by a flow hash, rewrite the MACs,
#            XDP_TX (no connection table, no counters): this machine's ceiling
#   dr       -g, 4 real servers, rr
#   health   dr while xvsd --config health-checks 1000 real servers every second
#            (a NAT service on 10.0.0.89:80 whose servers 10.0.0.21:20000-20999
#            never answer: each check is a SYN and a 1 s timeout, the costliest
#            kind), to show checks do not slow forwarding
#   loss     dr at a fixed offered rate of 50% of the round's dr peak, on a
#            freshly started xvsd (nothing of the peak search left in its rings)
#            and with the sink read before and after, once it has stopped
#            changing: frames sent and frames arrived over the same window
#   nat      two-armed -m (eth0 in, eth1 out), 4 real servers
#   tun      -i (IPIP), 4 real servers
#   new      dr, TCP, every frame a SYN of a new flow: new connections/s
#   mix      dr, TCP, 20% new flows / 80% established: every 5th frame a SYN of a
#            new flow, the others cycle over --flows established flows (xvs-bench
#            --mode mix); reported against dr_slow (issue 11: >= 1.5x the slow
#            path's DR rate of the issue's start, 0.32 Mpps)
#   nft      xvsd stopped; kernel forwarding with nftables DNAT numgen inc mod 4
#   mq       dr with a generator thread on each CPU: 1 queue/1 worker (mq1) and
#            2 queues/2 workers (mq2, a second topology with --queues 2)
#   lat      UDP RTT p50/p99 through the director (DR) vs direct to a real
#            server, on scripts/harness.sh's DR lab (real UDP responders): one
#            client, requests alternating between the VIP and the real server
#            that the VIP's only real server is, so both see the same responder,
#            the same machine state and the same seconds; the difference is the
#            director's hop
# With an xvsd whose --help lists --no-fast-path, the xvsd rows dr, nat, tun, new
# and mix also run as dr_slow, nat_slow, tun_slow, new_slow and mix_slow with --no-fast-path
# (the AF_XDP slow path alone). XVSD_ARGS (environment, word-split) is passed
# to every xvsd started, e.g. XVSD_ARGS=--busy-poll.
# Each rate row is xvs-bench peak: one window flat out, then a search over
# offered rates; the table quotes the highest forwarded rate of any window
# (and the flat-out one: what an overload leaves). CPU ns/packet: CPU time of
# xvsd's threads plus the director's NAPI kthreads (and ksoftirqd on its CPU)
# over that window, divided by the packets the sink counted in it.
#
# Results: target/bench/results-DATE.jsonl (one JSON line per measurement),
# log with every search step, xvsd's output and its datapath counters:
# target/bench/bench-DATE.log. Topologies: scripts/bench-topo.sh (prefixes xb,
# xb2), latency lab: scripts/harness.sh (prefix xbl); all torn down on exit,
# also on failure or ctrl-C.
#
# Needs root and 2+ CPUs, and an otherwise idle machine: each round first
# waits (bounded) for other load to settle.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib-ns.sh
. "$ROOT/scripts/lib-ns.sh"
cd "$ROOT"

SMOKE=0
ROUNDS=5
ROWS=reflect,xdptx,dr,health,loss,nat,tun,new,mix,nft,mq,lat
CONNS=0
CONNS_FP=()
BUILD=1
DOCS=1
SIZE=64
FLOWS=1024

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; }
die() {
    echo "bench.sh: error: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) SMOKE=1; shift ;;
        --rounds) [[ $# -ge 2 ]] || { usage; exit 2; }; ROUNDS=$2; shift 2 ;;
        --rows) [[ $# -ge 2 ]] || { usage; exit 2; }; ROWS=$2; shift 2 ;;
        --conns) CONNS=1; shift ;;
        --fast-path-max) [[ $# -ge 2 ]] || { usage; exit 2; }; CONNS_FP=(--fast-path-max "$2"); shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-docs) DOCS=0; shift ;;
        --size) [[ $# -ge 2 ]] || { usage; exit 2; }; SIZE=$2; shift 2 ;;
        --flows) [[ $# -ge 2 ]] || { usage; exit 2; }; FLOWS=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage; exit 2 ;;
    esac
done
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 50)) || die "--rounds must be 1..50"
[[ $SIZE =~ ^[0-9]+$ ]] && ((SIZE >= 64 && SIZE <= 1518)) || die "--size must be 64..1518"
[[ $FLOWS =~ ^[0-9]+$ ]] && ((FLOWS >= 1 && FLOWS <= 1000000)) || die "--flows must be 1..1000000"
[[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, XDP)"
NCPU=$(nproc)
((NCPU >= 2)) || die "needs at least 2 CPUs (generator and director on separate cores)"

# Seconds: warm-up before measuring, measurement window, fixed-rate run.
# Peak search (xvs-bench peak): flat-out warm-up, window per step, settle time
# after each rate change, steps after the flat-out window.
FOREIGN_MAX=0.15 # CPUs of other load above which a round counts as skewed
if ((SMOKE)); then
    ROUNDS=1
    MAX_ATTEMPTS=1
    DOCS=0
    PEAK_ARGS=(--warmup 0.3 --window 0.3 --settle 0.15 --steps 2)
    LOSS_SECS=1
    LAT_COUNT=300
    QUIET_WAIT=5
else
    MAX_ATTEMPTS=$((ROUNDS * 2))
    PEAK_ARGS=(--warmup 0.5 --window 0.8 --settle 0.3 --steps 6)
    LOSS_SECS=3
    LAT_COUNT=2000
    QUIET_WAIT=60
fi
GEN_CPU=1
DIR_CPU=0

want() { [[ ,$ROWS, == *,$1,* ]]; }

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUTDIR=$ROOT/target/bench
mkdir -p "$OUTDIR"
RESULTS=$OUTDIR/results-$STAMP.jsonl
LOG=$OUTDIR/bench-$STAMP.log
: >"$RESULTS"
: >"$LOG"
T_START=$(date +%s)

log() { echo "bench.sh: $*" | tee -a "$LOG" >&2; }

BIN=$ROOT/target/release
BENCH=$BIN/xvs-bench
# XVSD_BIN=path: another xvsd binary (e.g. a saved build, to compare two in one sitting).
XVSD=${XVSD_BIN:-$BIN/xvsd}
XVSADM=$BIN/xvsadm
P1=xb
P2=xb2
PL=xbl
VIP=10.0.0.88
DIR_MAC=02:00:0a:00:00:0c
DR_RIPS=(10.0.0.21 10.0.0.22 10.0.0.23 10.0.0.24)
TUN_RIPS=(10.0.0.31 10.0.0.32 10.0.0.33 10.0.0.34)
NAT_RIPS=(192.168.80.10 192.168.80.11 192.168.80.12 192.168.80.13)
SOCK_DIR=/run/xvs-bench
XVSD_PID=""
GEN_PID=""

# --- cleanup -----------------------------------------------------------------

cleanup() {
    set +e
    stop_pid "$GEN_PID"
    stop_pid "$XVSD_PID"
    ip netns exec "$P1-dir" nft delete table ip xvsbench 2>/dev/null
    ip -n "$P1-dir" link set dev eth0 xdpdrv off 2>/dev/null
    XVS_BENCH_PREFIX=$P1 scripts/bench-topo.sh down >/dev/null 2>&1
    XVS_BENCH_PREFIX=$P2 scripts/bench-topo.sh down >/dev/null 2>&1
    XVS_NS_PREFIX=$PL scripts/harness.sh down >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build and tools ---------------------------------------------------------

scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f ${CARGO_HOME:-$HOME/.cargo}/env ]]; then
    # shellcheck disable=SC1091
    . "${CARGO_HOME:-$HOME/.cargo}/env"
fi
if ((BUILD)); then
    log "building release binaries"
    T0=$(date +%s)
    cargo build --release --workspace --bins 2>&1 | tail -n 3 | tee -a "$LOG" >&2
    log "build took $(($(date +%s) - T0)) s"
fi
for b in "$BENCH" "$XVSD" "$XVSADM"; do
    [[ -x $b ]] || die "$b missing (cargo build --release --workspace --bins)"
done
"$XVSD" --help 2>/dev/null | grep -q -- --reflect || die "this xvsd has no --reflect"
XDPTX_OBJ=$OUTDIR/bench_xdp_tx.o
if want xdptx; then
    clang -O2 -g -Wall -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
        -c bpf/bench_xdp_tx.bpf.c -o "$XDPTX_OBJ" 2>>"$LOG" ||
        die "building bpf/bench_xdp_tx.bpf.c failed (see $LOG)"
fi
# Extra xvsd arguments for every row (word-split on purpose: several options).
read -r -a XVSD_EXTRA <<<"${XVSD_ARGS:-}"
# Fast-path variants: "" (the default) and, once xvsd has it, --no-fast-path.
PATH_VARIANTS=("")
if "$XVSD" --help 2>/dev/null | grep -q -- --no-fast-path; then
    PATH_VARIANTS+=(--no-fast-path)
fi
if want nft && ! command -v nft >/dev/null 2>&1; then
    log "installing nftables (the kernel reference row needs nft)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nftables >>"$LOG" 2>&1 ||
        { apt-get update -q >>"$LOG" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nftables >>"$LOG" 2>&1; } ||
        die "nft missing and apt-get could not install nftables"
fi

# --- machine -----------------------------------------------------------------

CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
KERNEL=$(uname -r)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then COMMIT+="+dirty"; fi
MODE=full
((SMOKE)) && MODE=smoke
printf '{"kind":"meta","cpu_model":"%s","nproc":"%s","kernel":"%s","date":"%s","commit":"%s","mode":"%s","rounds":"%s","size":"%s","flows":"%s"}\n' \
    "$CPU_MODEL" "$NCPU" "$KERNEL" "$(date -u +%Y-%m-%d)" "$COMMIT" "$MODE" "$ROUNDS" "$SIZE" "$FLOWS" >>"$RESULTS"
note() { printf '{"kind":"note","text":"%s"}\n' "$*" >>"$RESULTS"; log "note: $*"; }

# --- topologies --------------------------------------------------------------

log "topology $P1 (1 queue)"
XVS_BENCH_PREFIX=$P1 scripts/bench-topo.sh up --gen-cpu $GEN_CPU --dir-cpu $DIR_CPU >>"$LOG" 2>&1 ||
    die "bench-topo.sh up failed (see $LOG)"
if want mq; then
    log "topology $P2 (2 queues)"
    XVS_BENCH_PREFIX=$P2 scripts/bench-topo.sh up --queues 2 >>"$LOG" 2>&1 ||
        die "bench-topo.sh up --queues 2 failed (see $LOG)"
fi
if want lat; then
    log "latency lab $PL (scripts/harness.sh, DR, 2 real servers)"
    XVS_NS_PREFIX=$PL scripts/harness.sh up --rs 2 >>"$LOG" 2>&1 || die "harness.sh up failed (see $LOG)"
fi

# --- xvsd --------------------------------------------------------------------

# The health row's keepalived.conf: 1000 real servers that never answer.
HEALTH_CONF=$OUTDIR/health-storm.conf
{
    echo "virtual_server 10.0.0.89 80 {"
    echo "    delay_loop 1"
    echo "    lb_algo rr"
    echo "    lb_kind NAT"
    echo "    protocol TCP"
    for ((i = 0; i < 1000; i++)); do
        echo "    real_server 10.0.0.21 $((20000 + i)) {"
        echo "        TCP_CHECK {"
        echo "            connect_timeout 1"
        echo "        }"
        echo "    }"
    done
    echo "}"
} >"$HEALTH_CONF"

# xvsd_start PREFIX MODE [XVSD ARGS...]: MODE reflect|dr|nat|tun|new|mix|lat.
xvsd_start() {
    local p=$1 mode=$2 sock=$SOCK_DIR/$1.sock i
    shift 2
    local args=(--interface eth0 --socket "$sock")
    [[ $mode == nat ]] && args+=(--interface eth1)
    [[ $mode == reflect ]] && args+=(--reflect)
    args+=("${XVSD_EXTRA[@]}")
    rm -f "$sock"
    echo "--- xvsd $p $mode ${args[*]} $*" >>"$LOG"
    ip netns exec "$p-dir" "$XVSD" "${args[@]}" "$@" >>"$LOG" 2>&1 &
    XVSD_PID=$!
    for ((i = 0; i < 100; i++)); do # 10 s
        [[ -S $sock ]] && break
        kill -0 "$XVSD_PID" 2>/dev/null || die "xvsd ($mode) exited at start (see $LOG)"
        sleep 0.1
    done
    [[ -S $sock ]] || die "xvsd ($mode): no control socket after 10 s"
    local A=("$XVSADM" --socket "$sock") rip
    case "$mode" in
        reflect) "${A[@]}" -A -u "$VIP:80" -s rr ;;
        dr | health)
            "${A[@]}" -A -u "$VIP:80" -s rr
            for rip in "${DR_RIPS[@]}"; do "${A[@]}" -a -u "$VIP:80" -r "$rip:80" -g; done
            ;;
        new | mix)
            "${A[@]}" -A -t "$VIP:80" -s rr
            for rip in "${DR_RIPS[@]}"; do "${A[@]}" -a -t "$VIP:80" -r "$rip:80" -g; done
            ;;
        tun)
            "${A[@]}" -A -u "$VIP:80" -s rr
            for rip in "${TUN_RIPS[@]}"; do "${A[@]}" -a -u "$VIP:80" -r "$rip:80" -i; done
            ;;
        nat)
            "${A[@]}" -A -u "$VIP:80" -s rr
            for rip in "${NAT_RIPS[@]}"; do "${A[@]}" -a -u "$VIP:80" -r "$rip:80" -m; done
            ;;
        lat)
            # One real server, the one the direct requests go to: like with like.
            "${A[@]}" -A -u "$VIP:5353" -s rr
            "${A[@]}" -a -u "$VIP:5353" -r 10.0.0.9:5353 -g
            ;;
    esac >>"$LOG" 2>&1 || die "configuring xvsd ($mode) failed (see $LOG)"
}

xvsd_stop() {
    local p=$1
    if [[ -n $XVSD_PID ]]; then
        "$XVSADM" --socket "$SOCK_DIR/$p.sock" --datapath >>"$LOG" 2>&1 || true
        stop_pid "$XVSD_PID"
        wait "$XVSD_PID" 2>/dev/null || true
        XVSD_PID=""
    fi
}

# --- measurements --------------------------------------------------------------

# gen_start PREFIX SECONDS [GEN ARGS...]: generator in the background.
gen_start() {
    local p=$1 secs=$2
    shift 2
    ip netns exec "$p-gen" "$BENCH" gen --ifname g0 --dst-mac "$DIR_MAC" --dst-ip "$VIP" \
        --size "$SIZE" --duration "$secs" --quiet "$@" >>"$LOG" 2>&1 &
    GEN_PID=$!
}

gen_wait() {
    [[ -n $GEN_PID ]] || return 0
    wait "$GEN_PID" || log "warning: generator exited with an error (see $LOG)"
    GEN_PID=""
}

# peak ROW ROUND PREFIX SINK DESC [GEN ARGS...]: the peak search (xvs-bench peak)
# with the generator in PREFIX-gen; appends a rate line, sets LAST_PPS.
peak() {
    local row=$1 round=$2 p=$3 sink=$4 desc=$5 pps
    shift 5
    local tasks=(--napi "$p-dir:eth0" --napi "$p-dir:eth1" --kthread "ksoftirqd/$DIR_CPU")
    [[ $p == "$P2" ]] && tasks+=(--kthread "ksoftirqd/")
    [[ -n $XVSD_PID ]] && tasks+=(--pid "$XVSD_PID")
    echo "--- $row round $round" >>"$LOG"
    local out pps foreign
    out=$("$BENCH" peak --netns "$p-gen" --ifname g0 --dst-mac "$DIR_MAC" --dst-ip "$VIP" \
        --size "$SIZE" "$@" --sink "$sink" "${tasks[@]}" "${PEAK_ARGS[@]}" --verbose \
        --tag "row=$row" --tag "round=$round" --tag "desc=$desc" --out "$RESULTS" \
        --value pps,foreign_busy_max 2> >(tee -a "$LOG" | grep '^peak' | sed "s/ |.*//; s/^/bench.sh: $row round $round: /" >&2)) ||
        { log "warning: $row round $round: measurement failed (see $LOG)"; out="0 0"; }
    read -r pps foreign <<<"$out"
    LAST_PPS=${pps%.*}
    # Other load on the machine during this row: the round is skewed.
    if awk -v f="$foreign" -v m="$FOREIGN_MAX" 'BEGIN{exit !(f > m)}'; then
        log "$row round $round: $foreign CPU of other load on the machine"
        ROUND_DIRTY=1
    fi
}

# rate_row ROW ROUND PREFIX MODE SINK DESC [GEN ARGS...]: xvsd in MODE, then peak.
# With VARIANT=--no-fast-path set, xvsd gets it and the row is named ROW_slow.
rate_row() {
    local row=$1 round=$2 p=$3 mode=$4 sink=$5 desc=$6
    shift 6
    local extra=()
    if [[ -n ${VARIANT:-} ]]; then
        extra+=("$VARIANT")
        row=${row}_slow
        desc="$desc; $VARIANT"
    fi
    # Every frame a new connection: room for all of them (SYN_RECV entries live 60 s).
    [[ $mode == new || $mode == mix ]] && extra+=(--conn-max 8388608)
    [[ $mode == health ]] && extra+=(--config "$HEALTH_CONF")
    xvsd_start "$p" "$mode" "${extra[@]}"
    peak "$row" "$round" "$p" "$sink" "$desc" "$@"
}

# sink_settled AT: the sink's packet count once it has stopped changing (two
# reads 0.2 s apart agree; at most 3 s), so no frame still in flight is counted
# in the wrong window.
sink_settled() {
    local at=$1 a b i
    a=$("$BENCH" sink read "$at" --value packets 2>>"$LOG") || return 1
    for ((i = 0; i < 15; i++)); do
        sleep 0.2
        b=$("$BENCH" sink read "$at" --value packets 2>>"$LOG") || return 1
        [[ $a == "$b" ]] && break
        a=$b
    done
    echo "$b"
}

# loss_row ROUND PPS: DR at a fixed rate of PPS, on a freshly started xvsd:
# run right after the peak search on the same xvsd, frames of the search still
# in flight or in its rings could land in this window (a smoke run once counted
# 106,083 frames arriving of 104,833 sent). Sent and arrived are counted over
# the same window: the sink is read once settled before and after the run.
loss_row() {
    local round=$1 rate=$2 before after sent recv
    ((rate > 0)) || { log "loss: no DR rate this round; skipped"; return 0; }
    xvsd_start "$P1" dr
    # A short run first: neighbour entries and connection entries made, caches warm.
    ip netns exec "$P1-gen" "$BENCH" gen --ifname g0 --dst-mac "$DIR_MAC" --dst-ip "$VIP" \
        --size "$SIZE" --flows "$FLOWS" --rate "$rate" --duration 0.3 --quiet >>"$LOG" 2>&1 || true
    before=$(sink_settled "$P1-gen:g0")
    sent=$(ip netns exec "$P1-gen" "$BENCH" gen --ifname g0 --dst-mac "$DIR_MAC" --dst-ip "$VIP" \
        --size "$SIZE" --flows "$FLOWS" --rate "$rate" --duration "$LOSS_SECS" --quiet --value sent 2>>"$LOG")
    after=$(sink_settled "$P1-gen:g0")
    xvsd_stop "$P1"
    if [[ -z $before || -z $after || -z $sent || $sent == 0 ]]; then
        log "warning: loss round $round: could not read the counters"
        return 0
    fi
    recv=$((after - before))
    if ((recv > sent)); then
        # Cannot happen with the windows aligned; say so rather than quote it as 0% loss.
        log "warning: loss round $round: $recv frames arrived of $sent sent (counters misaligned); not recorded"
        return 0
    fi
    local pct
    pct=$(awk -v s="$sent" -v r="$recv" 'BEGIN{printf "%.4f", (s-r)/s*100}')
    printf '{"kind":"loss","row":"loss","round":"%s","offered_pps":%s,"percent_of_dr":50,"sent":%s,"received":%s,"loss_pct":%s}\n' \
        "$round" "$rate" "$sent" "$recv" "$pct" >>"$RESULTS"
    log "loss round $round: offered $rate pps, sent $sent, arrived $recv: $pct% lost"
}

# xdptx_row ROUND: the in-kernel reference, bpf/bench_xdp_tx.bpf.c on the
# director's eth0 (xvsd stopped).
xdptx_row() {
    local round=$1 d=$P1-dir
    ip -n "$d" link set dev eth0 xdpdrv obj "$XDPTX_OBJ" sec xdp 2>>"$LOG" ||
        { log "warning: xdptx round $round: attaching $XDPTX_OBJ failed (see $LOG)"; return 0; }
    peak xdptx "$round" "$P1" "$P1-gen:g0" \
        "in-kernel XDP_TX: MAC rewrite to 1 of 4 real servers by flow hash (bpf/bench_xdp_tx.bpf.c)" --flows "$FLOWS"
    ip -n "$d" link set dev eth0 xdpdrv off 2>>"$LOG" || true
}

nft_row() {
    local round=$1 d=$P1-dir
    ip netns exec "$d" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$d" nft -f - <<EOF
table ip xvsbench {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $VIP udp dport 80 dnat to numgen inc mod 4 map { 0 : ${DR_RIPS[0]}, 1 : ${DR_RIPS[1]}, 2 : ${DR_RIPS[2]}, 3 : ${DR_RIPS[3]} }
    }
}
EOF
    peak nft "$round" "$P1" "$P1-gen:g0" \
        "Linux nftables DNAT numgen inc mod 4, kernel forwarding (ip_forward=1, conntrack)" --flows "$FLOWS"
    ip netns exec "$d" nft delete table ip xvsbench
    ip netns exec "$d" sysctl -qw net.ipv4.ip_forward=0
}

lat_row() {
    local round=$1 c=$PL-client
    xvsd_start "$PL" lat
    # One client, requests alternating: direct to 10.0.0.9, then through the
    # director to the same server (the VIP's only real server), and so on.
    ip netns exec "$c" "$BENCH" latency --dst 10.0.0.9:5353 --row lat_direct --dst "$VIP:5353" --row lat_via \
        --count "$LAT_COUNT" --tag "round=$round" --out "$RESULTS" 2>>"$LOG" | tee -a "$LOG" | sed 's/^/bench.sh: lat (direct, via director): /' >&2
    xvsd_stop "$PL"
}

# bpf_maps PID: "BYTES LARGEST" for the BPF maps process PID holds fds of: the sum of
# their memlock (what the kernel charges for them: buckets, preallocated elements) and
# the largest one (its name from bpftool when installed, else its map id).
bpf_maps() {
    local pid=$1 f total=0 big=0 bigid=0 mem id name
    for f in /proc/"$pid"/fdinfo/*; do
        grep -q '^map_type:' "$f" 2>/dev/null || continue
        mem=$(awk '/^memlock:/ {print $2}' "$f")
        id=$(awk '/^map_id:/ {print $2}' "$f")
        [[ -n $mem ]] || continue
        total=$((total + mem))
        if ((mem > big)); then big=$mem; bigid=$id; fi
    done
    name="id$bigid"
    if command -v bpftool >/dev/null 2>&1 && ((bigid > 0)); then
        name=$(bpftool map show id "$bigid" 2>/dev/null | sed -n 's/.* name \([^ ]*\).*/\1/p' | head -1)
        [[ -n $name ]] || name="id$bigid"
    fi
    echo "$total $name"
}

# conns_rows RATE: DR with 10M live connections (populated at RATE frames/s,
# then the peak search cycles over all of them) and with 1k (same table size).
conns_rows() {
    local rate=$1 target=10000000 rss0 rss1 i conns=0 secs
    ((rate >= 50000)) || rate=50000
    secs=$((target / rate * 4 + 10)) # the table fills slower as it grows; the loop ends at the target
    ((secs <= 600)) || secs=600
    log "connection table: populating $target entries at $rate frames/s"
    xvsd_start "$P1" dr --conn-max 12000000 "${CONNS_FP[@]}"
    rss0=$(awk '/^VmRSS/ {print $2}' "/proc/$XVSD_PID/status")
    gen_start "$P1" "$secs" --flows "$target" --rate "$rate"
    for ((i = 0; i < secs * 2; i++)); do # bounded by the generator's duration
        sleep 0.5
        conns=$("$XVSADM" --socket "$SOCK_DIR/$P1.sock" --datapath 2>/dev/null | awk '/^  conns:/ {s += $2} END {print s+0}')
        ((conns >= target)) && break
        kill -0 "$GEN_PID" 2>/dev/null || break
    done
    stop_pid "$GEN_PID"
    wait "$GEN_PID" 2>/dev/null || true
    GEN_PID=""
    log "connection table: $conns entries after $((i / 2)) s"
    rss1=$(awk '/^VmRSS/ {print $2}' "/proc/$XVSD_PID/status")
    local bpf bpf_bytes bpf_big
    bpf=$(bpf_maps "$XVSD_PID")
    read -r bpf_bytes bpf_big <<<"$bpf"
    log "connection table: xvsd RSS $rss1 KiB, BPF maps $bpf_bytes bytes (largest: $bpf_big)"
    printf '{"kind":"conns","row":"c10m","round":"0","entries":%s,"rss_before_kb":%s,"rss_after_kb":%s,"bytes_per_entry":%s,"bpf_map_bytes":%s,"bpf_largest_map":"%s"}\n' \
        "$conns" "$rss0" "$rss1" "$(awk -v a="$rss0" -v b="$rss1" -v n="$conns" 'BEGIN{printf "%.1f", (b-a)*1024/(n>0?n:1)}')" \
        "$bpf_bytes" "$bpf_big" >>"$RESULTS"
    peak c10m 0 "$P1" "$P1-gen:g0" "DR, 10M live connections (each frame another entry)${CONNS_FP[*]:+; ${CONNS_FP[*]}}" --flows "$target"
    xvsd_stop "$P1"
    xvsd_start "$P1" dr --conn-max 12000000 "${CONNS_FP[@]}"
    peak c1k 0 "$P1" "$P1-gen:g0" "DR, 1k live connections (same table size)${CONNS_FP[*]:+; ${CONNS_FP[*]}}" --flows 1000
    xvsd_stop "$P1"
}

# --- rounds ------------------------------------------------------------------

# Rounds until ROUNDS of them ran without other load on the machine (at most
# MAX_ATTEMPTS); the report leaves skewed rounds out.
clean=0
DR_PEAKS=()
NEW_PEAKS=()
for ((r = 1; r <= MAX_ATTEMPTS && clean < ROUNDS; r++)); do
    q=$("$BENCH" quiet --max-busy 0.3 --timeout "$QUIET_WAIT")
    log "round $r ($clean of $ROUNDS clean so far): $q"
    ROUND_DIRTY=0
    if want reflect; then
        rate_row reflect "$r" "$P1" reflect "$P1-gen:g0" \
            "xvs reflect: AF_XDP receive + send back, MACs swapped, no LB work" --flows "$FLOWS"
        xvsd_stop "$P1"
    fi
    if want xdptx; then
        xdptx_row "$r"
    fi
    for VARIANT in "${PATH_VARIANTS[@]}"; do
        if want dr || want loss; then
            rate_row dr "$r" "$P1" dr "$P1-gen:g0" "DR, 4 real servers, rr" --flows "$FLOWS"
            xvsd_stop "$P1"
            if [[ -z $VARIANT ]]; then
                DR_PEAKS+=("$LAST_PPS")
                want loss && loss_row "$r" "$((LAST_PPS / 2))"
            fi
        fi
    done
    VARIANT=""
    if want health; then
        rate_row health "$r" "$P1" health "$P1-gen:g0" \
            "DR, 4 real servers, rr, while 1000 dead real servers are checked every second" --flows "$FLOWS"
        xvsd_stop "$P1"
    fi
    for VARIANT in "${PATH_VARIANTS[@]}"; do
        if want nat; then
            rate_row nat "$r" "$P1" nat "$P1-sink:s0" "NAT two-armed (eth0 -> eth1), 4 real servers, rr" --flows "$FLOWS"
            xvsd_stop "$P1"
        fi
        if want tun; then
            rate_row tun "$r" "$P1" tun "$P1-gen:g0" "TUN (IPIP), 4 real servers, rr" --flows "$FLOWS"
            xvsd_stop "$P1"
        fi
        if want new; then
            rate_row new "$r" "$P1" new "$P1-gen:g0" "DR, TCP, every frame a SYN of a new flow (new connections/s)" \
                --proto tcp --mode new
            [[ -z $VARIANT ]] && NEW_PEAKS+=("$LAST_PPS")
            xvsd_stop "$P1"
        fi
        if want mix; then
            rate_row mix "$r" "$P1" mix "$P1-gen:g0" \
                "DR, TCP, 20% new flows / 80% established (every 5th frame a SYN of a new flow, the others over $FLOWS flows)" \
                --proto tcp --mode mix --flows "$FLOWS"
            xvsd_stop "$P1"
        fi
    done
    VARIANT=""
    want nft && nft_row "$r"
    if want mq; then
        rate_row mq1 "$r" "$P1" dr "$P1-gen:g0" "DR, generator on CPUs 0+1, 1 queue / 1 worker" --flows "$FLOWS" --cpus 0,1
        xvsd_stop "$P1"
        rate_row mq2 "$r" "$P2" dr "$P2-gen:g0" "DR, generator on CPUs 0+1, 2 queues / 2 workers" --flows "$FLOWS" --cpus 0,1
        xvsd_stop "$P2"
    fi
    want lat && lat_row "$r"
    if ((ROUND_DIRTY)); then
        note "round $r had other load on the machine"
    else
        clean=$((clean + 1))
    fi
done
((clean >= ROUNDS)) || note "only $clean of $ROUNDS rounds ran without other load on the machine"
if ((CONNS)); then
    # Populate at a rate the new-connection path takes: 80% of the median `new` peak,
    # else 60% of the median DR peak (the established rate: too fast for new flows).
    median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]+0}'; }
    if ((${#NEW_PEAKS[@]})); then
        conns_rows "$(($(median "${NEW_PEAKS[@]}") * 8 / 10))"
    else
        conns_rows "$(($(median "${DR_PEAKS[@]:-0}") * 6 / 10))"
    fi
fi

# --- report ------------------------------------------------------------------

T_TOTAL=$(($(date +%s) - T_START))
note "bench.sh $MODE run took $T_TOTAL s (build included); results $(basename "$RESULTS")"
echo
if ((DOCS)); then
    "$BENCH" report --results "$RESULTS" --write-docs docs/benchmarks.md
else
    "$BENCH" report --results "$RESULTS"
fi
log "results: $RESULTS; log: $LOG; $T_TOTAL s"
