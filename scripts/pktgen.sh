#!/usr/bin/env bash
# Drive the kernel's pktgen (/proc/net/pktgen) from a generator host in front
# of a real director: UDP flows spread over a range of source addresses and
# ports, towards a VIP.
#
# Usage: scripts/pktgen.sh --dev DEV --dst-mac MAC --dst IP [options]
#
#   --dev DEV            interface to send from (on the generator host)
#   --dst-mac MAC        next hop: the director's MAC on that segment
#   --dst IP             destination address (the VIP)
#   --dst-port P         destination UDP port (default 80)
#   --src-min IP         first source address (default 10.1.0.1)
#   --src-max IP         last source address (default 10.1.1.0)
#   --sport-min P        first source port (default 1024)
#   --sport-max P        last source port (default 1027)
#   --size BYTES         frame size on the wire, FCS included (default 64;
#                        pktgen is given BYTES-4)
#   --rate PPS           frames per second per thread (default 0: flat out)
#   --count N            frames per thread (default 0: until --duration)
#   --duration SECS      stop after this long (default 10; at most 3600)
#   --threads N          pktgen threads, one per CPU 0..N-1 (default 1)
#   --flows N --flowlen L  pktgen flow mode: N concurrent flows of L frames
#                        each (default 0: every frame picks its own)
#   --burst N            frames per xmit_more burst (default 1)
#   --dry-run            print what would be written to /proc/net/pktgen
#
# Every frame takes a random source address and port within the ranges, so
# the ranges set the number of flows: the defaults (256 addresses x 4 ports)
# make 1024 flows, established-looking traffic like scripts/bench.sh's; ranges
# far larger than the frame count (e.g. 10.1.0.1-10.1.255.254 x 1024-65535)
# make nearly every frame a new flow. pktgen sends UDP only (no TCP SYN); for
# new TCP connections use xvs-bench gen --proto tcp --mode new.
#
# Prints pktgen's per-thread result and the summed rate.
#
# Where the kernel has no pktgen (no /proc/net/pktgen after `modprobe
# pktgen`, as on the xvs development VMs) this script says so and exits 3; use
# `xvs-bench gen` (BPF_PROG_RUN live frames) there, as scripts/bench.sh does.
set -euo pipefail

PG=/proc/net/pktgen
DEV=""
DST_MAC=""
DST=""
DST_PORT=80
SRC_MIN=10.1.0.1
SRC_MAX=10.1.1.0
SPORT_MIN=1024
SPORT_MAX=1027
SIZE=64
RATE=0
COUNT=0
DURATION=10
THREADS=1
FLOWS=0
FLOWLEN=0
BURST=1
DRY=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; }
die() {
    echo "pktgen.sh: error: $*" >&2
    exit 1
}

is_ipv4() {
    local o
    [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
    for o in "${BASH_REMATCH[@]:1}"; do ((10#$o <= 255)) || return 1; done
}
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dev | --dst-mac | --dst | --dst-port | --src-min | --src-max | --sport-min | --sport-max | \
            --size | --rate | --count | --duration | --threads | --flows | --flowlen | --burst)
            [[ $# -ge 2 ]] || { usage; exit 2; }
            case "$1" in
                --dev) DEV=$2 ;;
                --dst-mac) DST_MAC=$2 ;;
                --dst) DST=$2 ;;
                --dst-port) DST_PORT=$2 ;;
                --src-min) SRC_MIN=$2 ;;
                --src-max) SRC_MAX=$2 ;;
                --sport-min) SPORT_MIN=$2 ;;
                --sport-max) SPORT_MAX=$2 ;;
                --size) SIZE=$2 ;;
                --rate) RATE=$2 ;;
                --count) COUNT=$2 ;;
                --duration) DURATION=$2 ;;
                --threads) THREADS=$2 ;;
                --flows) FLOWS=$2 ;;
                --flowlen) FLOWLEN=$2 ;;
                --burst) BURST=$2 ;;
            esac
            shift 2
            ;;
        --dry-run) DRY=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage; exit 2 ;;
    esac
done

[[ -n $DEV ]] || die "--dev is required"
[[ $DEV =~ ^[A-Za-z0-9_.:-]{1,15}$ ]] || die "bad interface name '$DEV'"
[[ $DST_MAC =~ ^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$ ]] || die "--dst-mac must be aa:bb:cc:dd:ee:ff"
is_ipv4 "$DST" || die "--dst must be an IPv4 address"
if ! is_ipv4 "$SRC_MIN" || ! is_ipv4 "$SRC_MAX"; then die "--src-min/--src-max must be IPv4 addresses"; fi
for v in DST_PORT SPORT_MIN SPORT_MAX SIZE RATE COUNT DURATION THREADS FLOWS FLOWLEN BURST; do
    is_uint "${!v}" || die "--$(tr 'A-Z_' 'a-z-' <<<"$v") must be a non-negative integer"
done
((DST_PORT >= 1 && DST_PORT <= 65535)) || die "--dst-port must be 1..65535"
((SPORT_MIN >= 1 && SPORT_MIN <= SPORT_MAX && SPORT_MAX <= 65535)) || die "source ports: 1 <= min <= max <= 65535"
((SIZE >= 64 && SIZE <= 9022)) || die "--size must be 64..9022"
((DURATION >= 1 && DURATION <= 3600)) || die "--duration must be 1..3600 s"
((THREADS >= 1 && THREADS <= $(nproc))) || die "--threads must be 1..$(nproc)"
((BURST >= 1 && BURST <= 1024)) || die "--burst must be 1..1024"
if ((FLOWS > 0 && FLOWLEN == 0)); then die "--flows needs --flowlen"; fi

# Per-thread device commands, in pktgen's syntax (Documentation/networking/pktgen.rst).
dev_cmds() {
    local t=$1
    echo "count $COUNT"
    echo "pkt_size $((SIZE - 4))"
    echo "clone_skb 0"
    echo "burst $BURST"
    if ((RATE > 0)); then echo "ratep $RATE"; else echo "delay 0"; fi
    echo "dst_mac $DST_MAC"
    echo "dst_min $DST"
    echo "dst_max $DST"
    echo "src_min $SRC_MIN"
    echo "src_max $SRC_MAX"
    echo "udp_dst_min $DST_PORT"
    echo "udp_dst_max $DST_PORT"
    echo "udp_src_min $SPORT_MIN"
    echo "udp_src_max $SPORT_MAX"
    # Random within the ranges: threads do not send the same flows in lockstep.
    echo "flag IPSRC_RND"
    echo "flag UDPSRC_RND"
    if ((FLOWS > 0)); then
        echo "flows $FLOWS"
        echo "flowlen $FLOWLEN"
        echo "flag FLOW_SEQ"
    fi
    echo "flag UDPCSUM"
    # Each thread sends on its own TX queue.
    echo "queue_map_min $t"
    echo "queue_map_max $t"
}

pg_write() {
    local file=$1 cmd=$2
    if ((DRY)); then
        echo "echo '$cmd' > $file"
        return 0
    fi
    echo "$cmd" >"$file" || die "writing '$cmd' to $file failed"
    # pktgen reports a rejected command in the file's Result line.
    if [[ $file == "$PG/$DEV@"* ]] && ! grep -q '^Result: OK' "$file" 2>/dev/null; then
        die "pktgen rejected '$cmd' on ${file##*/}: $(grep '^Result:' "$file" || true)"
    fi
}

if ((DRY == 0)); then
    [[ $(id -u) -eq 0 ]] || die "must run as root (pktgen)"
    [[ -d $PG ]] || modprobe pktgen 2>/dev/null || true
    if [[ ! -d $PG ]]; then
        cat >&2 <<EOF
pktgen.sh: the kernel has no pktgen here ($PG is missing and 'modprobe pktgen'
did not provide it). Nothing was sent. On such machines generate load with
xvs-bench gen (BPF_PROG_RUN with live frames), as scripts/bench.sh does, e.g.:
  xvs-bench gen --ifname $DEV --dst-mac $DST_MAC --dst-ip $DST --dst-port $DST_PORT \\
      --size $SIZE --rate $RATE --duration $DURATION
EOF
        exit 3
    fi
    [[ -e /sys/class/net/$DEV ]] || die "no interface $DEV"
fi

cleanup() {
    ((DRY)) && return 0
    echo stop >"$PG/pgctrl" 2>/dev/null || true
    local t
    for ((t = 0; t < THREADS; t++)); do
        echo rem_device_all >"$PG/kpktgend_$t" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg_write "$PG/pgctrl" reset
for ((t = 0; t < THREADS; t++)); do
    pg_write "$PG/kpktgend_$t" rem_device_all
    pg_write "$PG/kpktgend_$t" "add_device $DEV@$t"
    while read -r cmd; do
        pg_write "$PG/$DEV@$t" "$cmd"
    done < <(dev_cmds "$t")
done

if ((DRY)); then
    echo "echo start > $PG/pgctrl   # stopped after $DURATION s"
    exit 0
fi

echo "pktgen.sh: $THREADS thread(s) on $DEV -> $DST:$DST_PORT ($DST_MAC), $SIZE B, sources $SRC_MIN-$SRC_MAX:$SPORT_MIN-$SPORT_MAX, $([[ $RATE == 0 ]] && echo "flat out" || echo "$RATE pps/thread"), up to $DURATION s" >&2
# `start` blocks until every thread is done; stop it after the duration.
echo start >"$PG/pgctrl" &
START_PID=$!
for ((i = 0; i < DURATION * 10; i++)); do # bounded: DURATION s
    kill -0 "$START_PID" 2>/dev/null || break
    sleep 0.1
done
echo stop >"$PG/pgctrl" 2>/dev/null || true
wait "$START_PID" 2>/dev/null || true

total=0
for ((t = 0; t < THREADS; t++)); do
    res=$(grep -A2 '^Result:' "$PG/$DEV@$t" || true)
    echo "thread $t: $res"
    pps=$(sed -n 's/.* \([0-9]\+\)pps.*/\1/p' <<<"$res" | head -1)
    total=$((total + ${pps:-0}))
done
echo "total: $total pps"
