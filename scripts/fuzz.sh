#!/usr/bin/env bash
# Fuzzes the targets of fuzz/ with libFuzzer, each for SECONDS (default 60)
# in the default mode and again in hardened mode, starting from the committed
# corpus:   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Stable toolchain, no extra tools: the coverage instrumentation is the one
# cargo-fuzz uses without a sanitizer (`-Cpasses=sancov-module`), and
# `--cfg fuzzing` turns the targets into libFuzzer binaries. The allocator's
# own checks (and hardened mode's) stand in for AddressSanitizer, which
# cannot run under an allocator that is itself being tested.
#
# A crash fails the run and leaves its input in target/fuzz/artifacts/TARGET/:
# add it to fuzz/regressions/TARGET/ (named after the bug) once fixed, and
# `cargo test -p rseq-alloc-fuzz` replays it from then on. New inputs go to
# target/fuzz/corpus/TARGET; fold the useful ones into fuzz/corpus/TARGET with
# `-merge=1`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(action_stream c_api layout)
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
echo "--- building the fuzz targets (libFuzzer, sancov)"
cargo build --release -p rseq-alloc-fuzz --bins --target "$triple" --target-dir target/fuzz
for target in "${targets[@]}"; do
    for mode in default hardened; do
        echo "--- fuzzing $target ($mode mode) for ${seconds}s"
        mkdir -p "target/fuzz/corpus/$target" "target/fuzz/artifacts/$target"
        hardened=0
        if [ "$mode" = hardened ]; then hardened=1; fi
        # The fuzzer's own status decides (`|| true` after the pipeline
        # would hide it: with pipefail, PIPESTATUS is then true's).
        set +e
        RSEQ_ALLOC_HARDENED=$hardened "target/fuzz/$triple/release/$target" \
            -max_total_time="$seconds" -timeout=60 -print_final_stats=1 \
            -artifact_prefix="target/fuzz/artifacts/$target/" \
            "target/fuzz/corpus/$target" "fuzz/corpus/$target" 2>&1 |
            grep -E "^(#[0-9]+ +DONE|INFO: Running with|stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|.*panicked|.*rseq-alloc:)"
        fuzzer_status="${PIPESTATUS[0]}"
        set -e
        if [ "$fuzzer_status" -ne 0 ]; then
            echo "fuzz target $target ($mode mode) failed: see target/fuzz/artifacts/$target/" >&2
            exit 1
        fi
    done
done
