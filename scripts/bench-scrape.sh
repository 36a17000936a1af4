#!/usr/bin/env bash
# Measures a /metrics scrape (and /api/status) of a director with 1000 real servers and
# about 1M connections (docs/benchmarks.md, "A scrape at 1M connections and 1000 real
# servers"). Root; release binaries (cargo build --release); run it under the namespace
# lock: flock /tmp/xvs-netns.lock scripts/bench-scrape.sh
#
# The table is filled as for "-L -c at 1M entries": a UDP service nobody answers on, so
# every datagram of hping3 --rand-source is a new 300 s entry. The 1000 servers belong
# to a TCP service; they are routed via rs1 so that every one resolves (next hop rs1).
set -euo pipefail
cd "$(dirname "$0")/.."
export XVS_NS_PREFIX=${XVS_NS_PREFIX:-xvsw}
P=$XVS_NS_PREFIX
S=/run/xvs-test/$P.sock
TARGET=${TARGET:-1000000}
ROUNDS=${ROUNDS:-10}
ADM=(target/release/xvsadm --socket "$S")
LOG=/tmp/$P-xvsd.log
cleanup() {
    [[ -n ${FLOOD:-} ]] && kill "$FLOOD" 2>/dev/null || true
    [[ -n ${XVSD:-} ]] && kill "$XVSD" 2>/dev/null && wait "$XVSD" 2>/dev/null || true
    scripts/harness.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
scripts/harness.sh up --topology dr --rs 3 --queues 1 >/dev/null
mkdir -p /run/xvs-test
ip netns exec "$P-dir" ip route add 10.1.0.0/16 via 10.0.0.9
ip netns exec "$P-dir" target/release/xvsd --interface eth0 --socket "$S" \
    --conn-max 1200000 --web-listen 10.0.0.12:9109 >"$LOG" 2>&1 &
XVSD=$!
for _ in $(seq 100); do "${ADM[@]}" -L -n >/dev/null 2>&1 && break; sleep 0.1; done
{
    echo "-A -u 10.0.0.88:9999 -s rr"
    for ip in 10.0.0.9 10.0.0.20 10.0.0.21; do echo "-a -u 10.0.0.88:9999 -r $ip -g"; done
    echo "-A -t 10.0.0.88:80 -s wlc"
    for i in $(seq 0 999); do echo "-a -t 10.0.0.88:80 -r 10.1.$((i / 250)).$((i % 250 + 1)) -g"; done
} | "${ADM[@]}" -R
# xvsd's own pid (the ip netns exec child execs it).
PID=$XVSD
entries() {
    ip netns exec "$P-client" curl -s http://10.0.0.12:9109/metrics |
        awk '$1 == "xvs_conn_table_entries" { print $2 }'
}
ip netns exec "$P-client" timeout 300 hping3 --udp --flood --rand-source -p 9999 10.0.0.88 \
    >/dev/null 2>&1 &
FLOOD=$!
t0=$(date +%s)
while (($(entries) < TARGET)); do
    (($(date +%s) - t0 < 240)) || { echo "table did not fill: $(entries)" >&2; exit 1; }
    sleep 1
done
kill "$FLOOD"; wait "$FLOOD" 2>/dev/null || true; FLOOD=
sleep 1
echo "entries: $(entries), real servers: $("${ADM[@]}" -L -n | grep -c -- '->')"
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
scrape() { # $1 path, $2 accept
    ip netns exec "$P-client" curl -s -o /dev/null -H "Accept: $2" \
        -w '%{time_total} %{size_download}\n' "http://10.0.0.12:9109$1"
}
for what in "/metrics text/plain" "/metrics application/openmetrics-text;version=1.0.0" \
    "/api/status application/json"; do
    set -- $what
    c0=$(cpu)
    times=()
    for _ in $(seq "$ROUNDS"); do times+=("$(scrape "$1" "$2")"); done
    c1=$(cpu)
    printf '%s (%s): bytes %s, seconds %s; xvsd CPU %s ticks (1/100 s) for %s\n' "$1" "$2" \
        "$(echo "${times[0]}" | cut -d' ' -f2)" \
        "$(printf '%s\n' "${times[@]}" | cut -d' ' -f1 | sort -n | tr '\n' ' ')" \
        "$((c1 - c0))" "$ROUNDS"
done
echo "xvsd RSS: $(grep VmRSS /proc/$PID/status)"
