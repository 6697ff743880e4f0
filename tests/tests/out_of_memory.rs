//! A Rust program out of address space, with rseq-alloc as this test
//! binary's `#[global_allocator]`: `try_reserve` fails and the program
//! recovers, and an infallible allocation aborts with `handle_alloc_error`'s
//! message. The test runs in a child with `RLIMIT_AS` lowered, in the
//! default mode only.

#![cfg(not(rseq_alloc_loom))]

use rseq_alloc::RseqAlloc;
use rseq_alloc_tests::modes;

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

/// Out of address space (`RLIMIT_AS`), in a child: `try_reserve` gets an
/// error and the program goes on; everything freed, as much fits again; an
/// infallible allocation ends in `handle_alloc_error`'s message and abort.
#[test]
fn suite_out_of_memory_in_rust() {
    let output = modes::run_test_in_child("out_of_memory_child", &[("RSEQ_TEST_OOM_CHILD", "1")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(libc::SIGABRT), "{}\n{stderr}", output.status);
    assert!(stderr.contains("out_of_memory_child: recovered"), "{stderr}");
    assert!(stderr.contains("memory allocation of 17179869184 bytes failed"), "{stderr}");
}

#[test]
fn out_of_memory_child() {
    if std::env::var_os("RSEQ_TEST_OOM_CHILD").is_none() {
        return;
    }
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let in_use: u64 = statm.split_whitespace().next().unwrap().parse::<u64>().unwrap() * 4096;
    let limit = libc::rlimit { rlim_cur: in_use + (256 << 20), rlim_max: in_use + (256 << 20) };
    // SAFETY: setrlimit reads a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve(1 << 34).is_err());
    let fill = || {
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(1024);
        loop {
            let mut chunk: Vec<u8> = Vec::new();
            if chunk.try_reserve_exact(1 << 20).is_err() {
                return kept;
            }
            chunk.resize(1 << 20, 1);
            kept.push(chunk);
        }
    };
    let first = fill();
    assert!(first.len() > 64, "{}", first.len());
    let n = first.len();
    drop(first);
    let again = fill();
    assert!(again.len() >= n - n / 10, "{n} then {}", again.len());
    drop(again);
    eprintln!("out_of_memory_child: recovered ({n} MiB fit twice)");
    let big = vec![0u8; 1 << 34];
    println!("unreachable: {}", big.len());
}
