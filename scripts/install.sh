#!/usr/bin/env bash
# Install xvsd and xvsadm, optionally as a drop-in for ipvsadm.
#
# Usage: scripts/install.sh [--prefix DIR] [--as-ipvsadm] [--force] [--from DIR]
#
#   --prefix DIR   install into DIR/sbin (default /usr/local)
#   --as-ipvsadm   also make DIR/sbin/ipvsadm a symlink to xvsadm and install the
#                  ipvsadm-save and ipvsadm-restore wrappers that Debian's ipvsadm
#                  package ships (same behaviour: ipvsadm-save [-n] runs `ipvsadm -S [-n]`,
#                  ipvsadm-restore drops `#` lines, runs `ipvsadm -C`, then feeds the rest
#                  to `ipvsadm -R`), calling the ipvsadm installed here
#   --force        replace an existing ipvsadm, ipvsadm-save or ipvsadm-restore that is not
#                  ours (a real ipvsadm binary, say); without it the script refuses
#   --from DIR     take the binaries from DIR instead of target/release (which is built
#                  with `cargo build --release` if a binary is missing there)
#
# xvsadm names itself after argv[0] in its messages, exactly as ipvsadm does, so once
# installed as ipvsadm its hints read "Try `ipvsadm -h' or 'ipvsadm --help' ...".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/usr/local
AS_IPVSADM=0
FORCE=0
FROM=

# usage [STATUS]: the header above; on stdout for --help (0), else on stderr.
usage() {
    local status=${1:-2}
    if [[ $status == 0 ]]; then
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    else
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    fi
    exit "$status"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) [[ $# -ge 2 ]] || usage; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --from) [[ $# -ge 2 ]] || usage; FROM=$2; shift 2 ;;
        --from=*) FROM=${1#--from=}; shift ;;
        --as-ipvsadm) AS_IPVSADM=1; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage ;;
    esac
done

# A line every file we install carries, so a later run knows it may replace it.
MARK="# installed by xvs scripts/install.sh"

if [[ -z $FROM ]]; then
    FROM=$ROOT/target/release
    if [[ ! -x $FROM/xvsd || ! -x $FROM/xvsadm ]]; then
        echo "install.sh: building xvsd and xvsadm (cargo build --release)" >&2
        (cd "$ROOT" && cargo build --release --bin xvsd --bin xvsadm)
    fi
fi
for b in xvsd xvsadm; do
    if [[ ! -x $FROM/$b ]]; then
        echo "install.sh: $FROM/$b not found" >&2
        exit 1
    fi
done

SBIN=$PREFIX/sbin
mkdir -p "$SBIN"

# Whether PATH may be replaced: absent, or something this script installed.
ours() {
    local f=$1
    if [[ -L $f ]]; then
        [[ $(readlink "$f") == xvsadm ]]
    elif [[ -e $f ]]; then
        grep -qxF "$MARK" "$f" 2>/dev/null
    else
        return 0
    fi
}

# With --as-ipvsadm, check all three names before touching anything.
if [[ $AS_IPVSADM == 1 && $FORCE == 0 ]]; then
    for n in ipvsadm ipvsadm-save ipvsadm-restore; do
        if ! ours "$SBIN/$n"; then
            echo "install.sh: $SBIN/$n exists and is not xvs's (a real ipvsadm?);" \
                "not replacing it without --force" >&2
            exit 1
        fi
    done
fi

install -m 0755 "$FROM/xvsd" "$SBIN/xvsd"
install -m 0755 "$FROM/xvsadm" "$SBIN/xvsadm"
echo "installed $SBIN/xvsd and $SBIN/xvsadm"

if [[ $AS_IPVSADM == 1 ]]; then
    rm -f "$SBIN/ipvsadm"
    ln -s xvsadm "$SBIN/ipvsadm"

    # Debian's wrappers (ipvsadm 1:1.31-1, /sbin/ipvsadm-save and /sbin/ipvsadm-restore) set
    # PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin and run `ipvsadm` by
    # name; ours put this prefix's sbin first so they reach the ipvsadm installed here.
    tmp=$(mktemp "$SBIN/.ipvsadm-save.XXXXXX")
    cat >"$tmp" <<EOF
#!/bin/bash
#      ipvsadm-save - Save IPVS rules
#
#      A very simple wrapper to save IPVS rules, as Debian's ipvsadm package ships it:
#      \`ipvsadm-save [-n]\` runs \`ipvsadm -S [-n]\`; any other option prints the help.
$MARK

PATH=$SBIN:/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin
NUMERIC=""


help()
{
    exec 1>&2
    echo \`basename \$0\`: Script to save the IPVS table to stdout.
    echo "   With the -n option, prints out the table in numeric format."

    exit 1
}


for arg
do
    case "\$arg"
    in
        -n) NUMERIC="-n" ;;
        -*) help ;;
    esac
done


# All the work is actually done in ipvsadm, horay

ipvsadm -S \$NUMERIC
EOF
    chmod 0755 "$tmp"
    mv -f "$tmp" "$SBIN/ipvsadm-save"

    tmp=$(mktemp "$SBIN/.ipvsadm-restore.XXXXXX")
    cat >"$tmp" <<EOF
#!/bin/bash
#      ipvsadm-restore - Restore IPVS rules
#
#      A very simple wrapper to restore IPVS rules, as Debian's ipvsadm package ships it:
#      clears the table, then restores the rules read from stdin, "#" lines left out.
$MARK

PATH=$SBIN:/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin

# All the work is actually done in ipvsadm, hooray

INPUT="\$(grep -v '^#')"
ipvsadm -C
echo "\$INPUT" | ipvsadm -R
EOF
    chmod 0755 "$tmp"
    mv -f "$tmp" "$SBIN/ipvsadm-restore"
    echo "installed $SBIN/ipvsadm -> xvsadm, $SBIN/ipvsadm-save and $SBIN/ipvsadm-restore"
fi
