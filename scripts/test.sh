#!/usr/bin/env bash
# The whole test suite: the workspace's tests (which re-run themselves with
# our own rseq registration, with the fallback forced, hardened and under
# valgrind), then the loom models and the unsupported-target stubs, each
# built with its cfg in a target directory of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "--- cargo build --release (the preload tests run target/release/librseq_alloc.so)"
cargo build --release

echo "--- cargo test --workspace --release"
cargo test --workspace --release

echo "--- loom models (cfg rseq_alloc_loom)"
RUSTFLAGS="--cfg rseq_alloc_loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p rseq-alloc-tests --release --test loom_models

echo "--- the unsupported-target stubs (cfg rseq_sys_unsupported): everything on the fallback"
RUSTFLAGS="--cfg rseq_sys_unsupported" CARGO_TARGET_DIR=target/unsupported RSEQ_TEST_EXPECT_MODE=unavailable \
    cargo test -p rseq-alloc-tests --release --test rseq_sys \
        --test stress --test realloc --test lifecycle --test policy --test misuse_global_alloc --test out_of_memory \
        -- --skip suite_
