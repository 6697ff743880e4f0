//! Every committed input of every fuzz target, replayed without libFuzzer:
//! the seed corpus (`fuzz/corpus/TARGET/`) and the inputs that once found a
//! bug (`fuzz/regressions/TARGET/`, one file per bug, named after it).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let dir = root.join(dir).join(target);
        if !dir.exists() {
            continue;
        }
        for file in rseq_alloc_fuzz::inputs(&dir) {
            run(&std::fs::read(&file).unwrap());
            count += 1;
        }
    }
    assert!(count > 0, "no committed inputs for {target}");
    eprintln!("{target}: {count} inputs replayed");
}

#[test]
fn action_stream_corpus() {
    replay("action_stream", rseq_alloc_fuzz::action_stream::run);
}

#[test]
fn c_api_corpus() {
    replay("c_api", rseq_alloc_fuzz::c_api::run);
}

#[test]
fn layout_corpus() {
    replay("layout", rseq_alloc_fuzz::layout::run);
}
