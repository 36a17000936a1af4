# Shell helpers shared by the namespace labs and the benchmarks (harness.sh,
# bench-topo.sh, ecmp-lab.sh, bench.sh, bench-ecmp.sh). Sourced, never run:
#   . "$ROOT/scripts/lib-ns.sh"

# nsx NS CMD...: CMD inside network namespace NS.
nsx() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# Deterministic MACs make captures and packet assertions easy to read:
# 02:00 (locally administered) + the IPv4 address's four octets.
mac_for() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    printf '02:00:%02x:%02x:%02x:%02x\n' "$a" "$b" "$c" "$d"
}

# kill_pids PID...: SIGTERM, up to 3 s for them to exit, then SIGKILL.
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

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL (empty PID: nothing).
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do # 5 s
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
