#!/usr/bin/env bash
# Build the Debian package, install it with dpkg -i, check what it put in place, start
# the installed xvsd in a namespace lab with the packaged rules example, remove the
# package and check it left nothing behind. Run by scripts/test.sh (CI).
#
# Usage: scripts/deb-check.sh [--release]
#
#   (default)  package the debug binaries `cargo build` made (copied to target/deb-check/,
#              `cargo deb --profile deb-check --no-build`): seconds instead of the minutes
#              a release build takes on 2 cores; the packaging is what is checked here
#   --release  `cargo deb` as a release would: a release build, then the package
#
# Leaves the .deb in target/debian/. Refuses to run where xvs is already installed (it
# would remove the operator's package). Needs root, dpkg, cargo-deb (scripts/deps.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE=0
case "${1:-}" in
    "") ;;
    --release) RELEASE=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "deb-check.sh: unknown argument: $1" >&2; exit 2 ;;
esac

die() {
    echo "deb-check.sh: error: $*" >&2
    exit 1
}
ok() { echo "deb-check.sh: ok: $*"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (dpkg -i)"
cd "$ROOT"
if [[ $(dpkg-query -W -f='${Status}' xvs 2>/dev/null || true) == "install ok installed" ]]; then
    echo "deb-check.sh: xvs is installed on this machine: not touching it; package check skipped" >&2
    exit 0
fi

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DEB=$ROOT/target/debian/xvs_${VERSION}_amd64.deb
rm -f "$DEB" "$ROOT"/target/debian/xvs-dbgsym_*.ddeb
if [[ $RELEASE == 1 ]]; then
    cargo deb
else
    for b in xvsd xvsadm; do
        [[ -x target/debug/$b ]] || die "target/debug/$b missing: run cargo build first"
    done
    mkdir -p target/deb-check
    cp target/debug/xvsd target/debug/xvsadm target/deb-check/
    cargo deb --profile deb-check --no-build --fast --no-dbgsym
fi
[[ -f $DEB ]] || die "$DEB was not built"
ok "built $(basename "$DEB")"

PREFIX=xsysdeb
SOCK=/run/xvs-test/$PREFIX.sock
XVSD_PID=
cleanup() {
    if [[ -n $XVSD_PID ]]; then
        kill -TERM "$XVSD_PID" 2>/dev/null || true
        wait "$XVSD_PID" 2>/dev/null || true
    fi
    XVS_NS_PREFIX=$PREFIX bash "$ROOT/scripts/harness.sh" down >/dev/null 2>&1 || true
    rm -f "$SOCK" "/tmp/xvs-test-$PREFIX.rules"
    if [[ $(dpkg-query -W -f='${Status}' xvs 2>/dev/null || true) != "not-installed" ]]; then
        dpkg --purge xvs >/dev/null 2>&1 || true
    fi
    undivert
}

# The ipvsadm package's files moved aside (dpkg-divert, the Debian way to do so and undo
# it), so that the alternative branch of postinst runs on a machine that has ipvsadm.
DIVERTED=()
IPVSADM_FILES=(/sbin/ipvsadm /sbin/ipvsadm-save /sbin/ipvsadm-restore /usr/share/man/man8/ipvsadm.8.gz)
divert() {
    local f
    for f in "${IPVSADM_FILES[@]}"; do
        dpkg-divert --local --rename --divert "$f.xvs-check" --add "$f" >/dev/null
        DIVERTED+=("$f")
    done
}
undivert() {
    local f
    for f in "${DIVERTED[@]}"; do
        dpkg-divert --local --rename --divert "$f.xvs-check" --remove "$f" >/dev/null 2>&1 || true
    done
    DIVERTED=()
}
trap cleanup EXIT

# /usr/sbin/ipvsadm before: a real file (the ipvsadm package) must survive untouched.
real_ipvsadm=0
if [[ -e /usr/sbin/ipvsadm && ! -L /usr/sbin/ipvsadm ]] || [[ -e /sbin/ipvsadm && ! -L /sbin/ipvsadm ]]; then
    real_ipvsadm=1
fi

dpkg -i "$DEB" >/tmp/xvs-deb-check.log 2>&1 || { cat /tmp/xvs-deb-check.log >&2; die "dpkg -i failed"; }
ok "dpkg -i"

for f in /usr/sbin/xvsd /usr/sbin/xvsadm /usr/sbin/xvsadm-save /usr/sbin/xvsadm-restore; do
    [[ -x $f ]] || die "$f missing or not executable"
done
/usr/sbin/xvsd --version | grep -q "^xvsd $VERSION$" || die "xvsd --version"
/usr/sbin/xvsadm -v | grep -q "^xvsadm v$VERSION " || die "xvsadm -v"
for f in /usr/lib/systemd/system/xvsd.service /etc/default/xvs /etc/xvs/rules.example \
    /etc/xvs/keepalived.conf.example /usr/share/bash-completion/completions/xvsadm \
    /usr/share/bash-completion/completions/xvsd /usr/share/doc/xvs/appliance.md; do
    [[ -f $f ]] || die "$f missing"
done
ok "binaries, unit, /etc/default/xvs, /etc/xvs/, completions, docs"

for page in xvsadm xvsd; do
    man -w "$page" >/dev/null 2>&1 || die "man -w $page finds nothing"
done
ok "man -w xvsadm xvsd: $(man -w xvsadm) $(man -w xvsd)"

out=$(systemd-analyze verify /usr/lib/systemd/system/xvsd.service 2>&1) || die "systemd-analyze verify: $out"
[[ -z $out ]] || die "systemd-analyze verify complained: $out"
ok "systemd-analyze verify xvsd.service"

check_alternative() {
    update-alternatives --query ipvsadm | grep -qx 'Value: /usr/sbin/xvsadm' ||
        die "the ipvsadm alternative does not point at xvsadm"
    [[ $(readlink -f /usr/sbin/ipvsadm) == /usr/sbin/xvsadm ]] || die "/usr/sbin/ipvsadm is not xvsadm"
    [[ $(readlink -f /usr/sbin/ipvsadm-save) == /usr/sbin/xvsadm-save ]] || die "ipvsadm-save"
    [[ $(readlink -f /usr/sbin/ipvsadm-restore) == /usr/sbin/xvsadm-restore ]] || die "ipvsadm-restore"
    [[ $(readlink -f "$(man -w ipvsadm 2>/dev/null)") == *xvsadm.8.gz ]] || die "man ipvsadm is not xvsadm's page"
    # It names itself after argv[0], as ipvsadm does.
    local msg
    msg=$(PATH=/usr/sbin:$PATH ipvsadm -Q 2>&1 || true)
    [[ $msg == *"Try \`ipvsadm -h'"* ]] || die "ipvsadm alternative's hint: $msg"
    ok "ipvsadm alternative -> xvsadm (with ipvsadm-save, ipvsadm-restore, ipvsadm.8)"
}

check_alternative_gone() {
    [[ ! -e /usr/sbin/ipvsadm && ! -L /usr/sbin/ipvsadm ]] || die "/usr/sbin/ipvsadm left after dpkg -r"
    ! update-alternatives --query ipvsadm >/dev/null 2>&1 || die "ipvsadm alternative left after dpkg -r"
}

if [[ $real_ipvsadm == 1 ]]; then
    [[ ! -L /usr/sbin/ipvsadm ]] || die "the ipvsadm package's /usr/sbin/ipvsadm was replaced"
    grep -q 'not an alternative' /tmp/xvs-deb-check.log || die "postinst did not say why it skipped the alternative"
    ok "the ipvsadm package's /usr/sbin/ipvsadm is left alone (no alternative)"
else
    check_alternative
fi

# The installed xvsd starts (no systemd as PID 1 needed) with the packaged rules example
# and reloads through the installed xvsadm, in a namespace lab of its own.
XVS_NS_PREFIX=$PREFIX bash scripts/harness.sh up --rs 1 --queues 1 >/dev/null 2>&1 ||
    die "harness up failed"
cp /etc/xvs/rules.example "/tmp/xvs-test-$PREFIX.rules"
mkdir -p /run/xvs-test
ip netns exec "$PREFIX-dir" /usr/sbin/xvsd --interface eth0 --rules "/tmp/xvs-test-$PREFIX.rules" \
    --socket "$SOCK" >/tmp/xvs-deb-check-xvsd.log 2>&1 &
XVSD_PID=$!
for _ in $(seq 1 100); do
    [[ -S $SOCK ]] && /usr/sbin/xvsadm --socket "$SOCK" -L -n >/dev/null 2>&1 && break
    kill -0 "$XVSD_PID" 2>/dev/null || { cat /tmp/xvs-deb-check-xvsd.log >&2; die "installed xvsd exited"; }
    sleep 0.1
done
saved=$(/usr/sbin/xvsadm --socket "$SOCK" -S -n) || { cat /tmp/xvs-deb-check-xvsd.log >&2; die "installed xvsd did not serve"; }
[[ $saved == "$(grep -v '^#' /etc/xvs/rules.example)" ]] || die "rules not applied: $saved"
/usr/sbin/xvsadm --socket "$SOCK" --reload | grep -q "rule(s) applied" || die "xvsadm --reload"
kill -TERM "$XVSD_PID"
wait "$XVSD_PID" || die "installed xvsd did not stop cleanly on SIGTERM"
XVSD_PID=
ok "installed xvsd started with /etc/xvs/rules.example, reloaded, stopped"

dpkg -r xvs >>/tmp/xvs-deb-check.log 2>&1 || { cat /tmp/xvs-deb-check.log >&2; die "dpkg -r failed"; }
[[ ! -e /usr/sbin/xvsd && ! -e /usr/sbin/xvsadm ]] || die "binaries left after dpkg -r"
if [[ $real_ipvsadm == 0 ]]; then
    check_alternative_gone
else
    [[ -x /usr/sbin/ipvsadm && ! -L /usr/sbin/ipvsadm ]] || die "the real ipvsadm is gone after dpkg -r"
fi
dpkg --purge xvs >>/tmp/xvs-deb-check.log 2>&1 || die "dpkg --purge failed"
[[ ! -e /etc/default/xvs ]] || die "/etc/default/xvs left after purge"
ok "dpkg -r and --purge leave nothing"

# With the ipvsadm package here, the alternative branch once more with its files diverted.
if [[ $real_ipvsadm == 1 ]]; then
    divert
    dpkg -i "$DEB" >/tmp/xvs-deb-check.log 2>&1 || { cat /tmp/xvs-deb-check.log >&2; die "dpkg -i (ipvsadm diverted) failed"; }
    check_alternative
    dpkg -r xvs >>/tmp/xvs-deb-check.log 2>&1 || die "dpkg -r (ipvsadm diverted) failed"
    check_alternative_gone
    dpkg --purge xvs >>/tmp/xvs-deb-check.log 2>&1 || die "dpkg --purge failed"
    undivert
    [[ -x /usr/sbin/ipvsadm && ! -L /usr/sbin/ipvsadm ]] || die "the ipvsadm package's file is not back"
    ok "with ipvsadm's files diverted: alternative installed and removed; ipvsadm's files back"
fi
