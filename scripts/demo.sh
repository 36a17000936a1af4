#!/usr/bin/env bash
# End-to-end demo: xvs as an LVS-DR director in the namespace lab.
#
# Usage: scripts/demo.sh
#
# Steps: install dependencies, build the release binaries, build the lab
# (scripts/harness.sh up), start xvsd on the director's eth0, configure a
# weighted round-robin service with xvsadm exactly as one would with ipvsadm,
#
#   xvsadm -A -t 10.0.0.88:80 -s wrr
#   xvsadm -a -t 10.0.0.88:80 -r 10.0.0.9:80  -g -w 2
#   xvsadm -a -t 10.0.0.88:80 -r 10.0.0.20:80 -g -w 5
#   xvsadm -a -t 10.0.0.88:80 -r 10.0.0.21:80 -g -w 5
#
# send 360 HTTP requests from the client namespace (each a new connection),
# count which real server answered, show `xvsadm -L -n`, stop xvsd with SIGINT
# and tear the lab down. Teardown also runs on failure and on ctrl-C.
# Exits 0 only when every request was answered by a real server.
#
# Environment:
#   XVS_NS_PREFIX     namespace prefix for the lab (default xvs)
#   XVS_DEMO_SOCKET   xvsd control socket (default /run/xvs/demo.sock)
#   XVS_DEMO_LOG      xvsd log file (default target/xvsd-demo.log)
#   XVS_BIN_DIR       use xvsd/xvsadm from this directory and skip the build
#   XVS_DEMO_REQUESTS number of requests (default 360)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P=${XVS_NS_PREFIX:-xvs}
export XVS_NS_PREFIX=$P
SOCK=${XVS_DEMO_SOCKET:-/run/xvs/demo.sock}
XVSD_LOG=${XVS_DEMO_LOG:-$ROOT/target/xvsd-demo.log}
REQUESTS=${XVS_DEMO_REQUESTS:-360}

VIP=10.0.0.88
PORT=80
# Real servers of the lab (scripts/harness.sh): name, RIP, wrr weight.
RS_NAMES=(rs1 rs2 rs3)
RS_IPS=(10.0.0.9 10.0.0.20 10.0.0.21)
RS_WEIGHTS=(2 5 5)

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

die() {
    echo "demo.sh: error: $*" >&2
    exit 1
}

step() { echo "==> $*"; }

case "${1:-}" in
    "") ;;
    -h | --help) usage; exit 0 ;;
    *) usage; exit 2 ;;
esac
[[ $# -le 1 ]] || { usage; exit 2; }
[[ $REQUESTS =~ ^[0-9]+$ ]] && ((REQUESTS > 0)) || die "XVS_DEMO_REQUESTS must be a positive number"
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, XDP)"

XVSD_PID=""
LAB_UP=0

stop_xvsd() {
    [[ -n $XVSD_PID ]] || return 0
    local i rc=0
    if kill -0 "$XVSD_PID" 2>/dev/null; then
        kill -INT "$XVSD_PID" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do # 50 x 0.1 s
            kill -0 "$XVSD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$XVSD_PID" 2>/dev/null; then
            echo "demo.sh: xvsd did not exit within 5 s of SIGINT; killing it" >&2
            kill -KILL "$XVSD_PID" 2>/dev/null || true
        fi
    fi
    wait "$XVSD_PID" 2>/dev/null || rc=$?
    XVSD_PID=""
    return "$rc"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n $XVSD_PID ]]; then
        stop_xvsd
    fi
    if ((LAB_UP)); then
        step "tearing down the lab"
        "$ROOT/scripts/harness.sh" down
    fi
    rm -f "$SOCK"
    if ((rc != 0)); then
        echo "demo.sh: failed (exit $rc); xvsd log: $XVSD_LOG" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "checking dependencies"
"$ROOT/scripts/deps.sh"
if ! command -v cargo >/dev/null 2>&1 && [[ -f ${CARGO_HOME:-$HOME/.cargo}/env ]]; then
    # shellcheck disable=SC1091
    . "${CARGO_HOME:-$HOME/.cargo}/env"
fi

if [[ -n ${XVS_BIN_DIR:-} ]]; then
    BIN=$XVS_BIN_DIR
    step "using binaries from $BIN (no build)"
else
    step "building (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
    BIN=$ROOT/target/release
fi
XVSD=$BIN/xvsd
XVSADM=$BIN/xvsadm
[[ -x $XVSD && -x $XVSADM ]] || die "xvsd/xvsadm not found in $BIN"

step "building the LVS-DR lab (prefix $P)"
LAB_UP=1
"$ROOT/scripts/harness.sh" up --rs "${#RS_NAMES[@]}"

step "starting xvsd in $P-dir on eth0 (log: $XVSD_LOG)"
mkdir -p "$(dirname "$SOCK")" "$(dirname "$XVSD_LOG")"
rm -f "$SOCK" # a stale socket from an earlier run would fake readiness
# setsid: own session, so a ctrl-C in the terminal reaches only this script,
# which then stops xvsd with SIGINT itself. env --default-signal: bash starts
# background jobs with SIGINT ignored; undo that so SIGINT always reaches xvsd.
setsid env --default-signal=INT ip netns exec "$P-dir" "$XVSD" --interface eth0 --socket "$SOCK" \
    </dev/null >"$XVSD_LOG" 2>&1 &
XVSD_PID=$!

for ((i = 0; i < 100; i++)); do # 100 x 0.1 s = 10 s
    [[ -S $SOCK ]] && break
    if ! kill -0 "$XVSD_PID" 2>/dev/null; then
        wait "$XVSD_PID" 2>/dev/null && rc=0 || rc=$?
        XVSD_PID=""
        tail -n 30 "$XVSD_LOG" >&2 || true
        die "xvsd exited (status $rc) before creating $SOCK"
    fi
    sleep 0.1
done
if [[ ! -S $SOCK ]]; then
    tail -n 30 "$XVSD_LOG" >&2 || true
    die "xvsd did not create $SOCK within 10 s"
fi

adm() {
    echo "    xvsadm $*"
    "$XVSADM" --socket "$SOCK" "$@"
}

step "configuring the virtual service"
adm -A -t "$VIP:$PORT" -s wrr
for k in "${!RS_NAMES[@]}"; do
    adm -a -t "$VIP:$PORT" -r "${RS_IPS[$k]}:$PORT" -g -w "${RS_WEIGHTS[$k]}"
done

step "sending $REQUESTS HTTP requests from $P-client to http://$VIP/ (one connection each)"
declare -A COUNT=()
failed=0
consecutive=0
sent=0
for ((i = 0; i < REQUESTS; i++)); do
    sent=$((sent + 1))
    if body=$(ip netns exec "$P-client" curl -s --max-time 2 "http://$VIP:$PORT/") && [[ -n $body ]]; then
        COUNT[$body]=$((${COUNT[$body]:-0} + 1))
        consecutive=0
    else
        failed=$((failed + 1))
        consecutive=$((consecutive + 1))
        # Each failure can cost the full 2 s timeout: stop early when nothing works.
        if ((consecutive >= 20)); then
            echo "demo.sh: 20 requests in a row failed; giving up after $((i + 1)) requests" >&2
            break
        fi
    fi
done

step "who answered (wrr weights ${RS_WEIGHTS[*]})"
total_w=0
for w in "${RS_WEIGHTS[@]}"; do total_w=$((total_w + w)); done
printf '    %-6s %-11s %6s %8s %8s\n' server rip weight answers expected
for k in "${!RS_NAMES[@]}"; do
    name=${RS_NAMES[$k]}
    printf '    %-6s %-11s %6s %8s %8s\n' "$name" "${RS_IPS[$k]}" "${RS_WEIGHTS[$k]}" \
        "${COUNT[$name]:-0}" "$((sent * RS_WEIGHTS[k] / total_w))"
    unset "COUNT[$name]"
done
for name in "${!COUNT[@]}"; do
    printf '    %-6s %-11s %6s %8s %8s\n' "?" "" "" "${COUNT[$name]}" "(unexpected body: $name)"
    failed=$((failed + COUNT[$name]))
done
printf '    %-6s %-11s %6s %8s\n' failed "" "" "$failed"

step "xvsadm -L -n"
"$XVSADM" --socket "$SOCK" -L -n

step "stopping xvsd (SIGINT)"
xvsd_rc=0
stop_xvsd || xvsd_rc=$?
((xvsd_rc == 0)) || echo "demo.sh: xvsd exited with status $xvsd_rc" >&2

if ((failed > 0)); then
    die "$failed of $sent requests sent ($REQUESTS planned) were not answered by a real server"
fi
((xvsd_rc == 0)) || die "xvsd did not exit cleanly"
step "demo OK"
