#!/usr/bin/env bash
# Build and test xvs: formatting, debug build, all tests, then clippy.
#
# Usage: scripts/test.sh
#
# Runs, stopping at the first failure:
#   1. scripts/deps.sh                (installs what is missing; needs root)
#   2. cargo fmt --check
#   3. cargo build                    (debug)
#   4. cargo test -- --test-threads=1 (unit tests, integration tests and the
#      end-to-end tests under tests/, which build namespace labs with
#      scripts/harness.sh; one test at a time because they share addresses
#      and must not tear each other's namespaces down)
#   5. cargo clippy --all-targets     (reported only: lints do not fail the run)
#
# Needs root: the end-to-end tests create network namespaces and attach XDP.
# Extra arguments are passed to `cargo test` before the `--`, e.g.
#   scripts/test.sh --test e2e
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

step "cargo fmt --check"
cargo fmt --check || die "formatting differs; run: cargo fmt"

step "cargo build"
cargo build

step "cargo test -- --test-threads=1"
cargo test "$@" -- --test-threads=1

step "cargo clippy --all-targets (report only)"
if ! cargo clippy --all-targets; then
    echo "test.sh: warning: clippy failed or reported errors (not fatal)" >&2
fi

step "all tests passed"
