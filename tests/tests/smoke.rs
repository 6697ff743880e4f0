#[global_allocator]
static GLOBAL: rseq_alloc::RseqAlloc = rseq_alloc::RseqAlloc;

#[test]
fn smoke() {
    let mut v: Vec<String> = Vec::new();
    for i in 0..100_000 {
        v.push(format!("hello {i}"));
    }
    let total: usize = v.iter().map(|s| s.len()).sum();
    assert!(total > 0);
    let big = vec![7u8; 10 << 20];
    assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 7 * (10 << 20));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut m = std::collections::HashMap::new();
                for i in 0..50_000 {
                    m.insert(i, vec![t as u8; i % 300]);
                }
                m.len()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 50_000);
    }
    let s = rseq_alloc::stats();
    eprintln!("mode {} mapped {} KiB aborts {}", s.mode, s.mapped_bytes >> 10, s.rseq_aborts);
}
