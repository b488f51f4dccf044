#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30): the CI smoke pass.
# Long campaigns: scripts/fuzz.sh 3600, or one target by hand:
#   cargo +nightly fuzz run client fuzz/corpus/client fuzz/seeds/client -- -dict=fuzz/dict/smtp.dict
# Crashes land in fuzz/artifacts/TARGET/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-30}"
if ! rustup toolchain list | grep -q nightly; then
  rustup toolchain install nightly --profile minimal >/dev/null
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked -q
fi
cd fuzz
cargo +nightly fuzz build -O >/dev/null 2>&1 || cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
  case "$target" in
    http_response|token_response|token_cache|redirect) dict=dict/http.dict ;;
    jsobject) dict=dict/js.dict ;;
    *) dict=dict/smtp.dict ;;
  esac
  mkdir -p "corpus/$target" "seeds/$target"
  printf '== fuzz %s (%s s)\n' "$target" "$SECONDS_EACH"
  cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" -dict="$dict" -print_final_stats=1 2>&1 \
    | grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|cov: .* DONE|Done [0-9]+ runs|SUMMARY|panicked|ERROR' || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz target $target crashed: see fuzz/artifacts/$target" >&2
    exit 1
  fi
done
