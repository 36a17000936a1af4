#!/usr/bin/env bash
# Build and test xvs: formatting, debug build, lints (fatal), all tests, the
# criterion benches and the fuzz targets.
#
# Usage: scripts/test.sh
#
# Runs, stopping at the first failure:
#   1. scripts/deps.sh                (installs what is missing; needs root)
#   2. cargo fmt --all --check
#   3. cargo build --workspace        (debug: xvsd, xvsadm and the bench tool)
#   4. cargo clippy --workspace --all-targets -- -D warnings, and the same
#      for the fuzz crate: any lint fails the run
#   5. cargo test --workspace -- --test-threads=1 (unit tests, integration
#      tests and the end-to-end tests under tests/, which build namespace labs
#      with scripts/harness.sh; one test at a time because they share
#      addresses and must not tear each other's namespaces down)
#   6. cargo test --workspace --bench '*' (the criterion benches, each benchmark
#      run once in test mode, so they neither stop compiling nor panic)
#   7. the fuzz targets: fuzz/ built on stable (libfuzzer-sys links without
#      the sanitizers that `cargo fuzz` adds on nightly) and each binary run
#      once over its seed corpus (fuzz/corpus/TARGET, -runs=0)
#   8. scripts/deb-check.sh: the Debian package built from step 3's binaries
#      (cargo deb), installed with dpkg -i, its binaries, unit (systemd-analyze
#      verify), man pages, /etc files and ipvsadm alternative checked, the
#      installed xvsd started in a namespace lab, then dpkg -r and --purge
#
# Needs root: the end-to-end tests create network namespaces and attach XDP.
# Extra arguments are passed to step 5's `cargo test` before the `--`, e.g.
#   scripts/test.sh --test e2e_dr
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

case "${1:-}" in
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
        exit 0
        ;;
esac

die() {
    echo "test.sh: error: $*" >&2
    exit 1
}

step() { echo "==> $*"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (the end-to-end tests create network namespaces)"

step "dependencies"
"$ROOT/scripts/deps.sh"
if ! command -v cargo >/dev/null 2>&1 && [[ -f ${CARGO_HOME:-$HOME/.cargo}/env ]]; then
    # shellcheck disable=SC1091
    . "${CARGO_HOME:-$HOME/.cargo}/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found"

cd "$ROOT"

step "cargo fmt --all --check"
cargo fmt --all --check || die "formatting differs; run: cargo fmt --all"

step "cargo build --workspace"
cargo build --workspace

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || die "clippy reported warnings"

step "cargo test --workspace -- --test-threads=1"
cargo test --workspace "$@" -- --test-threads=1

step "criterion benches in test mode (cargo test --workspace --bench '*')"
cargo test --workspace --bench '*'

# The fuzz crate is its own workspace (fuzz/Cargo.toml); sharing target/ reuses the
# main build's dependencies. Its binaries land in target/debug/{parse_flow,forward,xmit,sync_decode}.
FUZZ_TARGETS=(parse_flow forward xmit sync_decode)
step "fuzz targets: build on stable, clippy, one pass over the seed corpus"
cargo build --manifest-path fuzz/Cargo.toml --target-dir "$ROOT/target" --bins
cargo clippy --manifest-path fuzz/Cargo.toml --target-dir "$ROOT/target" --bins -- -D warnings ||
    die "clippy reported warnings in fuzz/"
for t in "${FUZZ_TARGETS[@]}"; do
    [[ -d $ROOT/fuzz/corpus/$t ]] || die "fuzz/corpus/$t missing"
    "$ROOT/target/debug/$t" -runs=0 "$ROOT/fuzz/corpus/$t" >"$ROOT/target/fuzz-$t.log" 2>&1 ||
        { tail -n 20 "$ROOT/target/fuzz-$t.log" >&2; die "fuzz target $t failed on its seed corpus"; }
done

step "Debian package: build, dpkg -i, check, dpkg -r (scripts/deb-check.sh)"
"$ROOT/scripts/deb-check.sh"

step "all tests passed"
