#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, and all tests.
# Installs what the tests need on a fresh machine first.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "real peers: install and start Postfix, Dovecot, oidc-provider"
# The tests run against real servers as well as in-process peers.
# POSTERN_REAL_PEERS=1 makes those tests fail, not skip, when a peer is
# missing. The peers are private instances on loopback high ports; only the
# processes started here are stopped at exit.
tests/peers/install.sh
tests/peers/start.sh
trap 'tests/peers/stop.sh' EXIT
export POSTERN_PEERS_ENV="${POSTERN_PEERS_DIR:-/tmp/postern-peers}/env"
export POSTERN_REAL_PEERS=1

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo doc, warnings denied (default features, and all as docs.rs builds)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast
  # nextest does not run doc tests
  cargo test --workspace --all-features --locked --doc
  # --all-features picks the aws-lc-rs crypto provider; users get ring by
  # default: the transport scenarios once more on the default features.
  cargo nextest run -p postern-tokio --locked --test transport
else
  cargo test --workspace --all-features --locked --no-fail-fast
  cargo test -p postern-tokio --locked --test transport
fi

step "the SMTP core once more for each wider vector build this CPU can run"
# The body encoder's portable block path uses 32 lanes when built for AVX2
# and 64 for AVX-512BW (chosen at compile time; its unit tests run it beside
# the run-time AVX2 and AVX-512BW paths); its tests and properties must hold
# on every width.
for level in x86-64-v3:avx2 x86-64-v4:avx512bw; do
  if grep -qw "${level#*:}" /proc/cpuinfo; then
    CARGO_TARGET_DIR="$PWD/target/${level%%:*}" RUSTFLAGS="-C target-cpu=${level%%:*}" \
      cargo test -p postern-smtp --locked --release -q
  fi
done

step "cargo package (every publishable crate)"
# --no-verify: a verify build would fetch every dependency again; the
# workspace build above already compiled the same sources. Tests that read
# the repository beyond their crate are left out of the packages (cargo
# prints which).
package_log="$(mktemp)"
if ! cargo package --workspace --no-verify --locked --exclude postern-benches \
  >"$package_log" 2>&1; then
  cat "$package_log"
  exit 1
fi
grep -E '^ *Packag|ignoring test' "$package_log"
rm -f "$package_log"

step "fuzz smoke run (every target, ${POSTERN_FUZZ_SECONDS:-30} s each)"
scripts/fuzz.sh "${POSTERN_FUZZ_SECONDS:-30}"
