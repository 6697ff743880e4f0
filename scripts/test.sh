#!/usr/bin/env bash
# The whole test suite: the workspace's tests (which re-run themselves with
# our own rseq registration, with the fallback forced and under valgrind),
# then the loom models, built with their cfg in a target directory of their own.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "--- cargo test --workspace --release"
cargo test --workspace --release

echo "--- loom models (cfg rseq_alloc_loom)"
RUSTFLAGS="--cfg rseq_alloc_loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p rseq-alloc-tests --release --test loom_models
