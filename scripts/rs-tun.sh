#!/usr/bin/env bash
# Configure this host (or network namespace) as an LVS-TUN real server.
#
# Usage: scripts/rs-tun.sh start  VIP [VIP...]
#        scripts/rs-tun.sh stop   [VIP...]     (no VIP: everything start set up)
#        scripts/rs-tun.sh status [VIP...]     (exit 0 only when configured)
#
# In LVS-TUN the director wraps each client packet in an outer IPv4 header
# (IPIP, RFC 2003: outer DIP -> RIP, inner client -> VIP) and the real server
# answers the client directly, from the VIP. A TUN real server therefore needs
#   * something that decapsulates IPIP:
#       - "ipip": the kernel's ipip module; its fallback device tunl0 accepts
#         IPIP packets addressed to any local address once it is up (the LVS
#         HOWTO way: modprobe ipip; ip link set tunl0 up);
#       - "bpf": where that module does not exist, the tc program
#         bpf/xvs_decap.bpf.c on the ingress (clsact, direct-action) of the
#         interface holding the default route strips the outer header and
#         hands the inner packet to the stack;
#   * each VIP as a /32 on lo with arp_ignore=1/arp_announce=2, exactly as an
#     LVS-DR real server (scripts/rs-dr.sh does that part). The HOWTO puts the
#     VIP on tunl0; lo works the same (Linux accepts a packet for any local
#     address on any interface) and is the only place available to "bpf";
#   * rp_filter=0 on all, default, lo, tunl0 and every interface present: the
#     decapsulated packet carries the client's source address and arrives on
#     tunl0 (or on an interface whose route back to the client may differ),
#     which strict reverse-path filtering would drop. The kernel uses
#     max(all, interface), so both must be 0.
#
# The method is chosen automatically: "ipip" when tunl0 exists or can be
# created (modprobe ipip), else "bpf". XVS_RS_TUN_METHOD=ipip|bpf forces one.
#
# start saves what it changes (rp_filter values, whether tunl0 was up, whether
# it created the clsact qdisc) in $XVS_RS_TUN_STATE (default /run/xvs-rs-tun),
# one file per network namespace, and stop puts it all back, so this works on
# a real host as well as inside `ip netns exec`.
#
# Environment:
#   XVS_RS_TUN_METHOD  auto (default), ipip or bpf
#   XVS_RS_TUN_DEV     interface for the bpf method (default: the one holding
#                      the IPv4 default route)
#   XVS_DECAP_OBJ      compiled bpf/xvs_decap.bpf.c to attach (default: build
#                      it with clang into $XVS_RS_TUN_STATE/decap.o)
#   XVS_RS_TUN_STATE   state directory (default /run/xvs-rs-tun)
#   XVS_RS_DR_STATE    passed on to rs-dr.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RS_DR="$HERE/rs-dr.sh"
STATE_DIR=${XVS_RS_TUN_STATE:-/run/xvs-rs-tun}
DECAP_SRC="$ROOT/bpf/xvs_decap.bpf.c"
# tc filter identity on the ingress hook: stop deletes exactly this filter.
TC_PREF=4242
TC_HANDLE=1
PROG_NAME=xvs_decap

usage() {
    cat >&2 <<EOF
usage: $0 start VIP [VIP...]
       $0 stop [VIP...]
       $0 status [VIP...]
  Sets up (start), reverts (stop) or checks (status) an LVS-TUN real server:
  IPIP decapsulation (ipip module's tunl0, or the tc-BPF program
  bpf/xvs_decap.bpf.c where the module is missing), VIP/32 on lo with
  arp_ignore=1/arp_announce=2 (rs-dr.sh), rp_filter=0.
  env XVS_RS_TUN_METHOD=auto|ipip|bpf, XVS_RS_TUN_DEV=IF, XVS_DECAP_OBJ=FILE
EOF
}

die() {
    echo "rs-tun.sh: error: $*" >&2
    exit 1
}

warn() { echo "rs-tun.sh: warning: $*" >&2; }

is_ipv4() {
    local ip=$1 o
    [[ $ip =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
    for o in "${BASH_REMATCH[@]:1}"; do
        ((10#$o <= 255)) || return 1
    done
}

# One state file per network namespace (/run is shared between namespaces
# entered with `ip netns exec`; the netns inode tells them apart).
state_file() {
    local ino
    ino=$(stat -L -c %i /proc/self/ns/net 2>/dev/null || echo host)
    echo "$STATE_DIR/netns-$ino.state"
}

# Value of KEY in the state file ("KEY=VALUE" lines), empty when absent.
state_get() {
    local f key=$1
    f=$(state_file)
    [[ -f $f ]] || return 0
    sed -n "s/^$key=//p" "$f" | tail -n 1
}

has_tunl0() { [[ -e /sys/class/net/tunl0 ]]; }

# Administratively up (the IFF_UP flag; tunl0's operstate stays "unknown").
tunl0_up() { ip -o link show tunl0 2>/dev/null | grep -q '[<,]UP[,>]'; }

# tunl0 exists in every namespace once the ipip module is loaded (or built in).
# Otherwise try to load it: modprobe where available; else creating an ipip
# device makes the kernel request the module itself.
ipip_available() {
    has_tunl0 && return 0
    if command -v modprobe >/dev/null 2>&1; then
        modprobe ipip >/dev/null 2>&1 || true
        has_tunl0 && return 0
    fi
    if ip link add xvs-ipip-probe type ipip >/dev/null 2>&1; then
        ip link del xvs-ipip-probe >/dev/null 2>&1 || true
    fi
    has_tunl0
}

default_dev() {
    ip -4 route show default 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1
}

# Prints the object file to attach, building it when needed.
decap_obj() {
    if [[ -n ${XVS_DECAP_OBJ:-} ]]; then
        [[ -f $XVS_DECAP_OBJ ]] || die "XVS_DECAP_OBJ=$XVS_DECAP_OBJ: no such file"
        echo "$XVS_DECAP_OBJ"
        return 0
    fi
    local obj="$STATE_DIR/decap.o" tmp
    if [[ -f $obj && ! $DECAP_SRC -nt $obj ]]; then
        echo "$obj"
        return 0
    fi
    [[ -f $DECAP_SRC ]] || die "$DECAP_SRC not found (set XVS_DECAP_OBJ to a compiled object)"
    command -v clang >/dev/null 2>&1 ||
        die "clang not found: cannot build $DECAP_SRC (run scripts/deps.sh, or set XVS_DECAP_OBJ)"
    mkdir -p "$STATE_DIR"
    # Build next to the target and rename: concurrent starts never see half a file.
    tmp=$(mktemp "$STATE_DIR/decap.XXXXXX")
    if ! clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
        -c "$DECAP_SRC" -o "$tmp" >&2; then
        rm -f "$tmp"
        die "clang failed to build $DECAP_SRC"
    fi
    mv -f "$tmp" "$obj"
    echo "$obj"
}

has_clsact() { tc qdisc show dev "$1" 2>/dev/null | grep -q '^qdisc clsact'; }

# True when our filter is on the ingress of $1.
has_decap_filter() {
    tc filter show dev "$1" ingress pref "$TC_PREF" 2>/dev/null | grep -q "name $PROG_NAME "
}

rp_keys() {
    local d
    echo all
    echo default
    for d in /proc/sys/net/ipv4/conf/*; do
        d=${d##*/}
        [[ $d == all || $d == default ]] && continue
        echo "$d"
    done
}

cmd_start() {
    [[ $# -ge 1 ]] || { usage; exit 2; }
    local vip method dev="" obj key f
    for vip in "$@"; do is_ipv4 "$vip" || die "not an IPv4 address: $vip"; done
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    f=$(state_file)
    method=$(state_get METHOD)
    case "${XVS_RS_TUN_METHOD:-auto}" in
        auto)
            if [[ -z $method ]]; then
                if ipip_available; then method=ipip; else method=bpf; fi
            fi
            ;;
        ipip)
            ipip_available || die "XVS_RS_TUN_METHOD=ipip but the ipip module is not available (no tunl0)"
            method=ipip
            ;;
        bpf) method=bpf ;;
        *) die "XVS_RS_TUN_METHOD must be auto, ipip or bpf (got '$XVS_RS_TUN_METHOD')" ;;
    esac
    local old_method
    old_method=$(state_get METHOD)
    [[ -z $old_method || $old_method == "$method" ]] ||
        die "already set up with method $old_method; run '$0 stop' first"

    if [[ $method == bpf ]]; then
        dev=${XVS_RS_TUN_DEV:-$(state_get DEV)}
        [[ -n $dev ]] || dev=$(default_dev)
        [[ -n $dev ]] || die "no IPv4 default route: set XVS_RS_TUN_DEV to the interface IPIP arrives on"
        [[ -e /sys/class/net/$dev ]] || die "interface $dev does not exist"
        local old_dev
        old_dev=$(state_get DEV)
        [[ -z $old_dev || $old_dev == "$dev" ]] ||
            die "decap already attached to $old_dev; run '$0 stop' first"
        command -v tc >/dev/null 2>&1 || die "tc not found (iproute2)"
        obj=$(decap_obj)
    fi

    # Save the originals once (a second start keeps the first start's values).
    if [[ ! -f $f ]]; then
        mkdir -p "$STATE_DIR"
        {
            echo "METHOD=$method"
            [[ $method == bpf ]] && echo "DEV=$dev"
            if [[ $method == bpf ]]; then
                if has_clsact "$dev"; then echo "CLSACT_CREATED=0"; else echo "CLSACT_CREATED=1"; fi
            else
                if tunl0_up; then echo "TUNL0_WAS_UP=1"; else echo "TUNL0_WAS_UP=0"; fi
            fi
            for key in $(rp_keys); do
                echo "RP_$key=$(cat "/proc/sys/net/ipv4/conf/$key/rp_filter")"
            done
        } >"$f.tmp"
        mv "$f.tmp" "$f"
    fi

    # Decapsulation first, VIPs last: the VIP must not answer anything before
    # the real server can take tunnelled traffic for it.
    if [[ $method == ipip ]]; then
        ip link set tunl0 up || die "cannot bring tunl0 up"
    else
        if ! has_clsact "$dev"; then
            tc qdisc add dev "$dev" clsact || die "cannot add clsact qdisc to $dev"
        fi
        if ! has_decap_filter "$dev"; then
            tc filter replace dev "$dev" ingress pref "$TC_PREF" handle "$TC_HANDLE" \
                bpf direct-action obj "$obj" sec tc ||
                die "cannot attach $obj to $dev ingress"
        fi
    fi
    for key in $(rp_keys); do
        echo 0 >"/proc/sys/net/ipv4/conf/$key/rp_filter" || die "cannot write net.ipv4.conf.$key.rp_filter"
    done
    bash "$RS_DR" start "$@" || die "rs-dr.sh start $* failed"
    # Record the VIPs this script manages (for a bare stop).
    local v
    for v in "$@"; do
        grep -qxF "VIP=$v" "$f" || echo "VIP=$v" >>"$f"
    done
}

cmd_stop() {
    local vip f method dev val key line rc=0
    for vip in "$@"; do is_ipv4 "$vip" || die "not an IPv4 address: $vip"; done
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    f=$(state_file)
    local vips=("$@")
    if [[ ${#vips[@]} -eq 0 && -f $f ]]; then
        mapfile -t vips < <(sed -n 's/^VIP=//p' "$f")
    fi
    if [[ ${#vips[@]} -gt 0 ]]; then
        bash "$RS_DR" stop "${vips[@]}" || rc=1
        if [[ -f $f ]]; then
            for vip in "${vips[@]}"; do
                sed -i "/^VIP=${vip//./\\.}\$/d" "$f"
            done
        fi
    fi
    # Tear the tunnel side down only once no VIP is left.
    [[ -f $f ]] || return $rc
    if grep -q '^VIP=' "$f"; then
        return $rc
    fi
    method=$(state_get METHOD)
    if [[ $method == bpf ]]; then
        dev=$(state_get DEV)
        if [[ -n $dev && -e /sys/class/net/$dev ]]; then
            if has_decap_filter "$dev"; then
                tc filter del dev "$dev" ingress pref "$TC_PREF" handle "$TC_HANDLE" bpf ||
                    { warn "cannot remove the decap filter from $dev"; rc=1; }
            fi
            if [[ $(state_get CLSACT_CREATED) == 1 ]] && has_clsact "$dev" &&
                [[ -z $(tc filter show dev "$dev" ingress 2>/dev/null) && -z $(tc filter show dev "$dev" egress 2>/dev/null) ]]; then
                tc qdisc del dev "$dev" clsact || { warn "cannot remove clsact from $dev"; rc=1; }
            fi
        fi
    elif [[ $method == ipip ]]; then
        if [[ $(state_get TUNL0_WAS_UP) == 0 ]] && has_tunl0; then
            ip link set tunl0 down || { warn "cannot bring tunl0 down"; rc=1; }
        fi
    fi
    while IFS= read -r line; do
        [[ $line == RP_* ]] || continue
        key=${line%%=*}
        key=${key#RP_}
        val=${line#*=}
        [[ $val =~ ^[0-9]+$ && -e /proc/sys/net/ipv4/conf/$key/rp_filter ]] || continue
        echo "$val" >"/proc/sys/net/ipv4/conf/$key/rp_filter" || { warn "cannot restore $key.rp_filter"; rc=1; }
    done <"$f"
    rm -f "$f"
    return $rc
}

cmd_status() {
    local vip f method dev ok=1 key val
    for vip in "$@"; do is_ipv4 "$vip" || die "not an IPv4 address: $vip"; done
    f=$(state_file)
    local vips=("$@")
    if [[ ! -f $f ]]; then
        echo "method:       none (not set up by rs-tun.sh; state $f missing)"
        ok=0
    fi
    method=$(state_get METHOD)
    if [[ ${#vips[@]} -eq 0 && -f $f ]]; then
        mapfile -t vips < <(sed -n 's/^VIP=//p' "$f")
    fi
    case "$method" in
        ipip)
            if tunl0_up; then
                echo "method:       ipip (kernel module, tunl0 up)"
            else
                echo "method:       ipip, but tunl0 is missing or down"
                ok=0
            fi
            ;;
        bpf)
            dev=$(state_get DEV)
            if [[ -n $dev ]] && has_decap_filter "$dev"; then
                echo "method:       bpf (tc clsact ingress on $dev, pref $TC_PREF: $(tc filter show dev "$dev" ingress pref "$TC_PREF" | sed -n 's/.* \(id [0-9]* name [^ ]*\).*/\1/p' | head -n 1))"
            else
                echo "method:       bpf, but the decap filter is missing on ${dev:-?}"
                ok=0
            fi
            ;;
    esac
    for key in all default lo tunl0 ${dev:+"$dev"}; do
        [[ -e /proc/sys/net/ipv4/conf/$key/rp_filter ]] || continue
        val=$(cat "/proc/sys/net/ipv4/conf/$key/rp_filter")
        if [[ $val != 0 ]]; then
            printf 'net.ipv4.conf.%-20s = %s  (want 0)\n' "$key.rp_filter" "$val"
            ok=0
        else
            printf 'net.ipv4.conf.%-20s = %s\n' "$key.rp_filter" "$val"
        fi
    done
    if [[ ${#vips[@]} -eq 0 ]]; then
        echo "VIPs:         none"
        ok=0
    else
        bash "$RS_DR" status "${vips[@]}" | grep -v '^status:' || ok=0
    fi
    if ((ok)); then
        echo "status: configured as LVS-TUN real server (${method})"
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
