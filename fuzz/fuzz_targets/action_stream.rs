//! Fuzz target `action_stream`: see `rseq_alloc_fuzz::action_stream`. Built with `--cfg fuzzing`
//! it is a libFuzzer target; built plainly it replays the files and
//! directories given on its command line.

#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rseq_alloc_fuzz::action_stream::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    rseq_alloc_fuzz::replay_main(rseq_alloc_fuzz::action_stream::run)
}
