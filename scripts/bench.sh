#!/usr/bin/env bash
# make bench: measures throughput to Pipefy (emulator), dry-run speed and memory, the
# steady state (overwrite and keep_edits), the ledger, start-up/size, drift and a large
# attachment's upload, side by side in one run; writes
# bench/out/results.json and bench/out/results.md (the table for the README).
#
# Builds, one at a time: the Lambda zips (`make build`, release arm64; x86_64 where the arm64
# standard library is missing; skip with BENCH_SKIP_BUILD=1), the functions' release x86_64
# binaries (start-up) and the bench binary (release). Tests never assert timings; this only reports them.
#
# Knobs (environment): BENCH_ROWS (1000000; the larger size is 10x, or BENCH_BIG_ROWS, 0 to
# skip), BENCH_THROUGHPUT_ROWS (5000), BENCH_PEER_SECONDS (60), BENCH_PEER_CARDS (300),
# BENCH_STEADY_ROWS, BENCH_DRIFT_CARDS (100000), BENCH_STARTUP_RUNS (5), BENCH_UPLOAD_MIB (200),
# BENCH_ONLY (throughput,dry,steady,ledger,startup,drift,uploads),
# BENCH_DRY_MODES (pipeline,engine), BENCH_SKIP_BUILD=1, BENCH_PYTHON, BENCH_PROFILE=debug
# (quick trials with debug builds: figures are then not representative).
# Generated tables are kept in bench/out/data/ and reused; delete the folder to regenerate.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${BENCH_PROFILE:-release}
case "$profile" in
  release) cargo_flags=(--release); bin_dir=target/release ;;
  debug) cargo_flags=(); bin_dir=target/debug ;;
  *) echo "bench: BENCH_PROFILE must be release or debug, not '$profile'" >&2; exit 2 ;;
esac

only=${BENCH_ONLY:-throughput,dry,steady,ledger,startup,drift,uploads}
wants() { [[ ",$only," == *",$1,"* ]]; }

lambda_dir=target/lambda
zip_arch=arm64
if wants startup && [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  # Always built (incremental: quick when nothing changed), so a zip is never older than
  # the code it is reported for.
  if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    echo "bench: building the Lambda zips (make build: release arm64, several minutes when cold)" >&2
    make --no-print-directory build
  else
    # No arm64 standard library on this machine (it cannot be downloaded here): measure the
    # same release zips built for x86_64, and say so in the results.
    echo "bench: aarch64-unknown-linux-gnu is not installed; zip sizes are of x86_64 release zips" >&2
    lambda_dir=target/lambda-x86_64
    zip_arch=x86_64
    for f in sync-scheduled sync-upload notify; do
      .venv/bin/cargo-lambda lambda build --release --output-format zip -p "$f" --lambda-dir "$lambda_dir"
    done
  fi
elif wants startup && ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  lambda_dir=target/lambda-x86_64
  zip_arch=x86_64
fi

if wants startup || wants uploads; then
  # Built on their own, not with the bench: building them together would unify the
  # emulator's dependency features into the functions.
  echo "bench: building the functions ($profile, x86_64) for the start-up figures" >&2
  cargo build "${cargo_flags[@]}" -p sync-scheduled -p sync-upload -p notify
fi
echo "bench: building the bench ($profile)" >&2
cargo build "${cargo_flags[@]}" -p pipefy-sync-bench

python=${BENCH_PYTHON:-.venv/bin/python}
[[ -x $python ]] || python=python3

BENCH_PROFILE=$profile "$bin_dir/pipefy-sync-bench" run \
  --out bench/out \
  --bin-dir "$bin_dir" \
  --lambda-dir "$lambda_dir" \
  --zip-arch "$zip_arch" \
  --python "$python" \
  --peer-script scripts/bench_peer.py
