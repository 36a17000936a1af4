#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to build and test xvs.
#
# Usage: scripts/deps.sh
#
# Idempotent: apt-get runs only when a package is missing, rustup only when a
# component is missing. Quiet when everything is already there. Needs root.
#
# Environment:
#   XVS_DEPS_NO_RUSTUP=1  do not bootstrap rustup when no Rust toolchain exists
#                         (fail with a message instead).
set -euo pipefail

usage() {
    echo "usage: $0" >&2
    echo "  installs the apt packages and Rust components xvs needs (root only)" >&2
}

die() {
    echo "deps.sh: error: $*" >&2
    exit 1
}

if [[ $# -gt 0 ]]; then
    case "$1" in
        -h | --help) usage; exit 0 ;;
        *) usage; exit 2 ;;
    esac
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages with apt-get); try: sudo $0"

# Debian package names. The BPF ones (libbpf-dev, libxdp-dev, bpftool, clang)
# build the XDP program and the xsk-rs/libbpf-rs crates; g++ builds libFuzzer
# for the fuzz crate (libfuzzer-sys, scripts/test.sh); the rest run the
# namespace harness and the demo; keepalived checks the keepalived.conf parser
# (tests/kconf_vs_keepalived.rs) and will run VRRP for the HA pair; prometheus
# brings promtool and the server that scrape xvsd's /metrics in the tests
# (src/web/tests.rs, tests/e2e_metrics.rs); chromium loads the status page
# headless in tests/e2e_status_page.rs (as root in a namespace: --no-sandbox);
# systemd (systemd-analyze verify of the unit) and man-db (man -w) check the
# Debian package (scripts/deb-check.sh); bird2 and frr announce and route the VIPs
# in the ECMP lab (scripts/ecmp-lab.sh, tests/e2e_ecmp.rs).
APT_PACKAGES=(
    clang llvm libbpf-dev libxdp-dev libelf-dev zlib1g-dev pkg-config m4 g++
    iproute2 iputils-ping ethtool tcpdump curl iperf3 bpftool python3 procps hping3
    keepalived prometheus chromium systemd man-db bird2 frr
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    # dpkg -s also succeeds for removed-but-not-purged packages; require the
    # "install ok installed" state.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
    echo "deps.sh: installing apt packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp /tmp/xvs-deps.XXXXXX)
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "apt-get failed to install: ${missing[*]}"
    fi
    rm -f "$log"
fi

# Rust: a rustup-managed toolchain (Debian 12's rustc is too old for the crate
# graph). rustup's own env file puts ~/.cargo/bin on PATH.
if [[ -f "${CARGO_HOME:-$HOME/.cargo}/env" ]]; then
    # shellcheck disable=SC1091
    . "${CARGO_HOME:-$HOME/.cargo}/env"
fi

if ! command -v cargo >/dev/null 2>&1 && ! command -v rustup >/dev/null 2>&1; then
    if [[ ${XVS_DEPS_NO_RUSTUP:-0} == 1 ]]; then
        die "no Rust toolchain (cargo/rustup) found; install rustup from https://rustup.rs"
    fi
    echo "deps.sh: no Rust toolchain found; installing rustup (stable, minimal profile)" >&2
    log=$(mktemp /tmp/xvs-deps.XXXXXX)
    if ! curl --proto '=https' --tlsv1.2 -sSf --max-time 300 https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --default-toolchain stable -c rustfmt -c clippy >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "rustup installation failed"
    fi
    rm -f "$log"
    # shellcheck disable=SC1091
    . "${CARGO_HOME:-$HOME/.cargo}/env"
fi

command -v cargo >/dev/null 2>&1 || die "cargo not on PATH after setup (source ~/.cargo/env?)"

if command -v rustup >/dev/null 2>&1; then
    installed=$(rustup component list --installed 2>/dev/null || true)
    want=()
    for comp in rustfmt clippy; do
        grep -q "^${comp}\(-preview\)\?-" <<<"$installed" || want+=("$comp")
    done
    if [[ ${#want[@]} -gt 0 ]]; then
        echo "deps.sh: adding rust components: ${want[*]}" >&2
        rustup component add "${want[@]}" >/dev/null || die "rustup component add ${want[*]} failed"
    fi
else
    # A toolchain without rustup (e.g. distro cargo): we can only check.
    cargo fmt --version >/dev/null 2>&1 || die "cargo fmt missing and no rustup to install rustfmt"
    cargo clippy --version >/dev/null 2>&1 || die "cargo clippy missing and no rustup to install clippy"
fi

# cargo-deb builds the Debian package (scripts/deb-check.sh); a registry package, built
# from source once (a few minutes on 2 cores), pinned so every machine packages alike.
CARGO_DEB_VERSION=3.8.0
if [[ $(cargo deb --version 2>/dev/null) != *"$CARGO_DEB_VERSION"* ]]; then
    echo "deps.sh: installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)" >&2
    log=$(mktemp /tmp/xvs-deps.XXXXXX)
    if ! cargo install --locked --version "$CARGO_DEB_VERSION" cargo-deb >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "cargo install cargo-deb failed"
    fi
    rm -f "$log"
fi

exit 0
