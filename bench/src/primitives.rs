//! The per-CPU primitives the allocator is built from, each behind one
//! function so the criterion bench and the `primitives` command time exactly
//! the same code: an rseq increment (indexed by `cpu_id` or `mm_cid`), the
//! atomic alternatives it replaces, and a slab pop+push pair.

use std::sync::atomic::{AtomicU64, Ordering};

use rseq_sys::slab_layout::{Header, SENTINEL_BIT, STATE_OPEN, Slabs, first_free_slot, header_offset};
use rseq_sys::{ByCpuId, ByMmCid, CpuIndex};

/// Counters are 64 bytes apart, so no two CPUs share a line.
const STRIDE_SHIFT: u32 = 6;
/// Slab regions are 4 KiB per CPU.
const SLAB_SHIFT: u32 = 12;

/// One cache line per possible CPU, and a one-class slab, for the benchmarks.
pub struct Primitives {
    counters: Vec<AtomicU64>,
    shared: AtomicU64,
    _slab: Vec<u64>,
    /// Where `slab` is, for the sections (with the area offset, if rseq is on).
    slab_at: Slabs,
    /// One list head per CPU, 64 bytes apart, each seeded with 64 nodes.
    list_heads: Vec<u64>,
    _nodes: Vec<[u64; 2]>,
    ncpus: u32,
}

impl Default for Primitives {
    fn default() -> Self {
        Self::new()
    }
}

impl Primitives {
    /// Counters and a slab for every possible CPU, the slab half full.
    pub fn new() -> Primitives {
        let ncpus = rseq_sys::possible_cpus();
        let words_per_region = 1usize << (SLAB_SHIFT - 3);
        let mut slab = vec![0u64; ncpus as usize * words_per_region];
        let begin = first_free_slot(1) + 1;
        for cpu in 0..ncpus as usize {
            let region = &mut slab[cpu * words_per_region..][..words_per_region];
            region[begin - 1] = SENTINEL_BIT as u64;
            for (i, slot) in region[begin..begin + 64].iter_mut().enumerate() {
                *slot = ((i + 1) << 4) as u64;
            }
            let header = Header { current: (begin + 64) as u32, end: (begin + 128) as u32 };
            let header_word = header_offset(0) / 8;
            // Class 0's header is word 1 of the region.
            region[header_word] = header.pack();
            region[0] = STATE_OPEN;
        }
        let mut nodes = vec![[0u64; 2]; 64 * ncpus as usize];
        let mut list_heads = vec![0u64; (ncpus as usize) << (STRIDE_SHIFT - 3)];
        for (i, node) in nodes.iter_mut().enumerate() {
            let head = &mut list_heads[(i % ncpus as usize) << (STRIDE_SHIFT - 3)];
            node[0] = *head;
            *head = node.as_ptr() as u64;
        }
        let slab_at = Slabs::new(
            rseq_sys::mode().is_rseq().then(rseq_sys::area_offset).flatten().unwrap_or(0),
            slab.as_ptr().cast_mut().cast(),
            ncpus,
        );
        Primitives {
            counters: (0..(ncpus as usize) << (STRIDE_SHIFT - 3)).map(|_| AtomicU64::new(0)).collect(),
            shared: AtomicU64::new(0),
            _slab: slab,
            slab_at,
            list_heads,
            _nodes: nodes,
            ncpus,
        }
    }

    /// Whether the rseq operations can run here (registers the calling thread).
    pub fn rseq_available() -> bool {
        rseq_sys::register_current_thread().is_ok()
    }

    fn rseq_add<I: CpuIndex>(&self) {
        let offset = rseq_sys::area_offset().expect("rseq registered");
        // SAFETY: `counters` covers `ncpus << STRIDE_SHIFT` bytes and is only
        // touched by sections (the atomics view is never used concurrently with them).
        let done = unsafe {
            rseq_sys::percpu_add::<I, STRIDE_SHIFT>(offset, self.counters.as_ptr().cast_mut().cast(), self.ncpus, 1)
        };
        debug_assert_eq!(done, Ok(()));
    }

    /// One rseq increment of this CPU's counter, indexed by `cpu_id`.
    #[inline(never)]
    pub fn rseq_add_cpu_id(&self) {
        self.rseq_add::<ByCpuId>();
    }

    /// One rseq increment of this concurrency id's counter (`mm_cid`).
    #[inline(never)]
    pub fn rseq_add_mm_cid(&self) {
        self.rseq_add::<ByMmCid>();
    }

    /// One `lock xadd` on a single shared counter.
    #[inline(never)]
    pub fn atomic_fetch_add(&self) {
        self.shared.fetch_add(1, Ordering::Relaxed);
    }

    /// `sched_getcpu()` (glibc reads it from the rseq area when registered,
    /// else the vDSO), then a `lock xadd` on that CPU's counter.
    #[inline(never)]
    pub fn getcpu_indexed_atomic(&self) {
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
        self.counters[cpu << (STRIDE_SHIFT - 3)].fetch_add(1, Ordering::Relaxed);
    }

    /// One slab pop and one push of the same item, on this CPU.
    #[inline(never)]
    pub fn slab_pop_push(&self) {
        assert!(rseq_sys::area_offset().is_some(), "rseq registered");
        // SAFETY: `slab_at` holds the area offset (the mode, decided in `new`,
        // is rseq) and the slab, laid out per `slab_layout` with 64 items and
        // capacity 128 on every CPU; only sections touch it.
        unsafe {
            if let Ok(item) = rseq_sys::slab_pop::<ByCpuId, SLAB_SHIFT>(&self.slab_at, 0) {
                let _ = rseq_sys::slab_push::<ByCpuId, SLAB_SHIFT>(&self.slab_at, 0, item);
            }
        }
    }
}

impl Primitives {
    /// One intrusive-list pop and one push of the same node, on this CPU.
    #[inline(never)]
    pub fn list_pop_push(&self) {
        let offset = rseq_sys::area_offset().expect("rseq registered");
        let heads = self.list_heads.as_ptr().cast_mut().cast::<u8>();
        // SAFETY: one null-terminated list per CPU of nodes that live as long
        // as `self`; only sections touch the heads and links.
        unsafe {
            if let Ok(node) = rseq_sys::list_pop::<ByCpuId, STRIDE_SHIFT>(offset, heads, self.ncpus) {
                let _ = rseq_sys::list_push::<ByCpuId, STRIDE_SHIFT>(offset, heads, self.ncpus, node);
            }
        }
    }
}

/// One benchmarked operation.
pub type Op = fn(&Primitives);

/// Every primitive, by name, for tables and benches.
pub const ALL: [(&str, Op); 6] = [
    ("rseq increment (cpu_id)", Primitives::rseq_add_cpu_id),
    ("rseq increment (mm_cid)", Primitives::rseq_add_mm_cid),
    ("atomic fetch_add (one counter)", Primitives::atomic_fetch_add),
    ("sched_getcpu + atomic fetch_add", Primitives::getcpu_indexed_atomic),
    ("rseq slab pop + push", Primitives::slab_pop_push),
    ("rseq intrusive list pop + push", Primitives::list_pop_push),
];

/// Whether primitive `name` needs rseq.
pub fn needs_rseq(name: &str) -> bool {
    name.starts_with("rseq")
}
