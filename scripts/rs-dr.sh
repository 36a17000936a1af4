#!/usr/bin/env bash
# Configure this host (or network namespace) as an LVS-DR real server.
#
# Usage: scripts/rs-dr.sh start  VIP [VIP...]
#        scripts/rs-dr.sh stop   [VIP...]     (no VIP: every VIP this script added)
#        scripts/rs-dr.sh status [VIP...]     (exit 0 only when configured)
#
# What "configured" means is the classic recipe from the LVS HOWTO (LVS-DR,
# "the ARP problem"): the director and every real server hold the VIP, but only
# the director may answer ARP for it, so the real servers
#   * hold each VIP as a /32 on the loopback (label lo:xvs), so the kernel
#     accepts packets addressed to the VIP that the director forwards with the
#     real server's MAC, and replies come from the VIP;
#   * set arp_ignore=1: answer ARP only for addresses configured on the
#     receiving interface (the VIP is on lo, so eth0 stays silent about it);
#   * set arp_announce=2: never use the VIP as the source of ARP requests
#     (always pick the best local address on the outgoing interface).
# Both sysctls are set on "all" (the kernel uses max(all, interface)), on "lo"
# as the HOWTO does, and on "default" so interfaces created later inherit them.
#
# start saves the previous sysctl values and stop restores them once the last
# VIP is gone. The saved values live under $XVS_RS_DR_STATE (default
# /run/xvs-rs-dr), one file per network namespace, so this works both on a real
# host and inside `ip netns exec`.
#
# Environment:
#   XVS_RS_DR_STATE  state directory (default /run/xvs-rs-dr)
set -euo pipefail

LABEL="lo:xvs"
STATE_DIR=${XVS_RS_DR_STATE:-/run/xvs-rs-dr}
SYSCTL_KEYS=(all/arp_ignore all/arp_announce lo/arp_ignore lo/arp_announce default/arp_ignore default/arp_announce)
declare -A WANT=([arp_ignore]=1 [arp_announce]=2)

usage() {
    cat >&2 <<EOF
usage: $0 start VIP [VIP...]
       $0 stop [VIP...]
       $0 status [VIP...]
  Sets up (start), reverts (stop) or checks (status) an LVS-DR real server:
  VIP/32 on lo (label $LABEL), net.ipv4.conf.{all,lo,default}.arp_ignore=1,
  arp_announce=2. status exits non-zero when not configured.
EOF
}

die() {
    echo "rs-dr.sh: error: $*" >&2
    exit 1
}

is_ipv4() {
    local ip=$1 o
    [[ $ip =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
    for o in "${BASH_REMATCH[@]:1}"; do
        ((10#$o <= 255)) || return 1
    done
}

sysctl_path() { echo "/proc/sys/net/ipv4/conf/$1"; }

# One state file per network namespace: /run is shared between namespaces
# entered with `ip netns exec`, the netns inode tells them apart.
state_file() {
    local ino
    ino=$(stat -L -c %i /proc/self/ns/net 2>/dev/null || echo host)
    echo "$STATE_DIR/netns-$ino.sysctl"
}

# VIPs on lo carrying our label, one per line (address without prefix).
our_vips() {
    ip -4 -o addr show dev lo label "$LABEL" 2>/dev/null |
        sed -n 's/.* inet \([0-9.]*\)\/32 .*/\1/p'
}

# All /32s on lo except 127.0.0.0/8 (whatever the label), one per line.
lo_vips() {
    ip -4 -o addr show dev lo 2>/dev/null |
        sed -n 's/.* inet \([0-9.]*\)\/32 .*/\1/p' | grep -v '^127\.' || true
}

has_vip() { lo_vips | grep -qxF "$1"; }

save_sysctls() {
    local f key
    f=$(state_file)
    [[ -f $f ]] && return 0 # already saved by an earlier start: keep the originals
    mkdir -p "$STATE_DIR"
    {
        for key in "${SYSCTL_KEYS[@]}"; do
            echo "$key $(cat "$(sysctl_path "$key")")"
        done
    } >"$f.tmp"
    mv "$f.tmp" "$f"
}

set_sysctls() {
    local key
    for key in "${SYSCTL_KEYS[@]}"; do
        echo "${WANT[${key#*/}]}" >"$(sysctl_path "$key")" || die "cannot write net.ipv4.conf.${key/\//.}"
    done
}

restore_sysctls() {
    local f key val
    f=$(state_file)
    if [[ -f $f ]]; then
        while read -r key val; do
            [[ -n $key && $val =~ ^[0-9]+$ ]] || continue
            echo "$val" >"$(sysctl_path "$key")" || echo "rs-dr.sh: warning: cannot restore $key" >&2
        done <"$f"
        rm -f "$f"
    else
        # Nothing saved (state lost, e.g. after a reboot of /run): kernel defaults.
        for key in "${SYSCTL_KEYS[@]}"; do
            echo 0 >"$(sysctl_path "$key")" || echo "rs-dr.sh: warning: cannot reset $key" >&2
        done
    fi
}

cmd_start() {
    [[ $# -ge 1 ]] || { usage; exit 2; }
    local vip
    for vip in "$@"; do is_ipv4 "$vip" || die "not an IPv4 address: $vip"; done
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    # Sysctls first, address second: the VIP must never be visible to ARP on
    # the real server's interfaces, not even for a moment.
    save_sysctls
    set_sysctls
    ip link set dev lo up
    for vip in "$@"; do
        if has_vip "$vip"; then
            continue
        fi
        ip addr add "$vip/32" dev lo label "$LABEL" || die "cannot add $vip/32 to lo"
    done
}

cmd_stop() {
    local vip vips=("$@")
    for vip in "${vips[@]}"; do is_ipv4 "$vip" || die "not an IPv4 address: $vip"; done
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    if [[ ${#vips[@]} -eq 0 ]]; then
        mapfile -t vips < <(our_vips)
    fi
    for vip in "${vips[@]}"; do
        if has_vip "$vip"; then
            ip addr del "$vip/32" dev lo || die "cannot remove $vip/32 from lo"
        fi
    done
    # Restore ARP behaviour only when no VIP we manage is left on lo; another
    # VIP still served by this real server needs the ARP settings.
    if [[ -z $(our_vips) ]]; then
        restore_sysctls
    fi
}

cmd_status() {
    local vip ok=1 key val
    for vip in "$@"; do is_ipv4 "$vip" || die "not an IPv4 address: $vip"; done
    local vips=("$@")
    if [[ ${#vips[@]} -eq 0 ]]; then
        mapfile -t vips < <(our_vips)
        if [[ ${#vips[@]} -eq 0 ]]; then
            echo "VIPs on lo:   none (label $LABEL)"
            ok=0
        fi
    fi
    for vip in "${vips[@]}"; do
        if has_vip "$vip"; then
            echo "VIP $vip/32 on lo: present"
        else
            echo "VIP $vip/32 on lo: MISSING"
            ok=0
        fi
    done
    for key in "${SYSCTL_KEYS[@]}"; do
        val=$(cat "$(sysctl_path "$key")")
        local name=${key#*/} flag=""
        # all/* is what counts (effective value = max(all, iface)); lo/default
        # are reported for the HOWTO recipe but only "all" decides.
        if [[ $key == all/* ]]; then
            if [[ $name == arp_ignore ]] && ((val < 1 || val > 2)); then flag="  (want 1)"; ok=0; fi
            if [[ $name == arp_announce ]] && ((val != 2)); then flag="  (want 2)"; ok=0; fi
        fi
        printf 'net.ipv4.conf.%-20s = %s%s\n' "${key/\//.}" "$val" "$flag"
    done
    if ((ok)); then
        echo "status: configured as LVS-DR real server"
        return 0
    fi
    echo "status: NOT configured"
    return 1
}

[[ $# -ge 1 ]] || { usage; exit 2; }
cmd=$1
shift
case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
