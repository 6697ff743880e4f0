//! A test-owned per-CPU slab, laid out as `rseq_sys::slab_layout` says and
//! driven by rseq-sys's sections, plus a [`Ledger`] that catches a token
//! handed out twice at the moment it happens.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use rseq_sys::slab_layout::{
    Header, SENTINEL_BIT, SLOT_BYTES, STATE_BUSY, STATE_OFFSET, STATE_OPEN, Slabs, first_free_slot, header_offset,
};
use rseq_sys::{CpuIndex, Miss};

/// Each CPU's region is `1 << SHIFT` bytes (1024 slots).
pub const SHIFT: u32 = 13;

/// A per-CPU slab of `classes` classes with `capacity` slots each. Every
/// class starts dormant on every CPU, as the allocator's do: sections miss
/// until [`TestSlab::wake`] gives it its slots there.
pub struct TestSlab<I: CpuIndex> {
    base: *mut u8,
    bytes: usize,
    ncpus: u32,
    classes: usize,
    capacity: usize,
    _index: PhantomData<I>,
}

// SAFETY: the region is shared through critical sections and atomics only.
unsafe impl<I: CpuIndex> Sync for TestSlab<I> {}
// SAFETY: as above; the mapping is not tied to a thread.
unsafe impl<I: CpuIndex> Send for TestSlab<I> {}

impl<I: CpuIndex> TestSlab<I> {
    /// An empty slab over all possible CPUs.
    pub fn new(classes: usize, capacity: usize) -> Self {
        let ncpus = rseq_sys::possible_cpus();
        assert!(first_free_slot(classes) + 1 + classes * (capacity + 1) <= 1 << (SHIFT - 3), "classes do not fit");
        let bytes = (ncpus as usize) << SHIFT;
        // SAFETY: an anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let slab = TestSlab { base: base.cast(), bytes, ncpus, classes, capacity, _index: PhantomData };
        for cpu in 0..ncpus {
            slab.slot(cpu, slab.shared_sentinel()).store(SENTINEL_BIT as u64, Ordering::Relaxed);
            for class in 0..classes {
                slab.header(cpu, class).store(slab.dormant().pack(), Ordering::Relaxed);
            }
            slab.state(cpu).store(STATE_OPEN, Ordering::Release);
        }
        slab
    }

    /// The sentinel slot every dormant class shares.
    fn shared_sentinel(&self) -> usize {
        first_free_slot(self.classes)
    }

    /// A dormant class's header.
    fn dormant(&self) -> Header {
        let above = (self.shared_sentinel() + 1) as u32;
        Header { current: above, end: above }
    }

    /// Gives `class` its own slots on this CPU if it is dormant there;
    /// `Ok(true)` if this call did.
    pub fn wake(&self, class: usize) -> Result<bool, Miss> {
        let at = self.at()?;
        let begin = self.begin(class);
        let awake = Header { current: begin as u32, end: (begin + self.capacity) as u32 };
        // SAFETY: the layout invariants hold; slot `begin - 1` is read by
        // nobody while the class is dormant, and `awake` is valid once it
        // holds the sentinel bit.
        unsafe { rseq_sys::slab_replace_header::<I, SHIFT>(&at, class, self.dormant().pack(), awake.pack(), begin - 1) }
    }

    /// Where the slab is, for a section run by this thread.
    fn at(&self) -> Result<Slabs, Miss> {
        let offset = rseq_sys::area_offset().ok_or(Miss::NoCpu)?;
        Ok(Slabs::new(offset, self.base, self.ncpus))
    }

    /// Slots per class per CPU.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Regions (possible CPUs).
    pub fn ncpus(&self) -> u32 {
        self.ncpus
    }

    fn begin(&self, class: usize) -> usize {
        self.shared_sentinel() + 2 + class * (self.capacity + 1)
    }

    fn region(&self, cpu: u32) -> *mut u8 {
        assert!(cpu < self.ncpus);
        // SAFETY: in bounds by the assertion.
        unsafe { self.base.add((cpu as usize) << SHIFT) }
    }

    fn header(&self, cpu: u32, class: usize) -> &AtomicU64 {
        assert!(class < self.classes);
        // SAFETY: the header is in the region, 4-aligned, and only accessed atomically or by sections.
        unsafe { &*self.region(cpu).add(header_offset(class)).cast::<AtomicU64>() }
    }

    fn state(&self, cpu: u32) -> &AtomicU64 {
        // SAFETY: the state word is an 8-aligned word of the region.
        unsafe { &*self.region(cpu).add(STATE_OFFSET).cast::<AtomicU64>() }
    }

    fn slot(&self, cpu: u32, index: usize) -> &AtomicU64 {
        assert!(index * SLOT_BYTES >= header_offset(self.classes) && index < 1 << (SHIFT - 3));
        // SAFETY: in the region by the assertion, 8-aligned.
        unsafe { &*self.region(cpu).add(index * SLOT_BYTES).cast::<AtomicU64>() }
    }

    /// Pops from this CPU's `class`.
    pub fn pop(&self, class: usize) -> Result<usize, Miss> {
        let at = self.at()?;
        // SAFETY: the layout invariants hold (set up in `new`, kept by sections and `drain`).
        unsafe { rseq_sys::slab_pop::<I, SHIFT>(&at, class) }
    }

    /// Pushes `item` (even, above `Miss::MAX_CODE`) onto this CPU's `class`.
    pub fn push(&self, class: usize, item: usize) -> Result<(), Miss> {
        assert!(item & SENTINEL_BIT == 0 && item > Miss::MAX_CODE);
        let at = self.at()?;
        // SAFETY: as in `pop`, and the item is valid.
        unsafe { rseq_sys::slab_push::<I, SHIFT>(&at, class, item) }
    }

    /// Pops up to `out.len()` items (at most `rseq_sys::MAX_BATCH`).
    pub fn pop_batch(&self, class: usize, out: &mut [usize]) -> Result<usize, Miss> {
        let at = self.at()?;
        // SAFETY: as in `pop`; `out` holds `out.len()` items.
        unsafe { rseq_sys::slab_pop_batch::<I, SHIFT>(&at, class, out.as_mut_ptr(), out.len()) }
    }

    /// Pushes a prefix of `items` (at most `rseq_sys::MAX_BATCH`); returns its length.
    pub fn push_batch(&self, class: usize, items: &[usize]) -> Result<usize, Miss> {
        let at = self.at()?;
        // SAFETY: as in `push` for each item.
        unsafe { rseq_sys::slab_push_batch::<I, SHIFT>(&at, class, items.as_ptr(), items.len()) }
    }

    /// The cross-CPU protocol: marks `cpu` busy, fences it so no section
    /// that missed the mark can still commit there, takes every item of every
    /// class, and reopens it. `fence` false skips the fence (to show the
    /// test catches its absence).
    pub fn drain(&self, cpu: u32, fence: bool) -> Vec<usize> {
        self.state(cpu).store(STATE_BUSY, Ordering::SeqCst);
        if fence {
            let fenced = if I::FIELD == rseq_sys::abi::OFFSET_MM_CID {
                rseq_sys::fence_all_cpus()
            } else {
                rseq_sys::fence_cpu(cpu)
            };
            assert_eq!(fenced, Ok(()), "membarrier rseq fence");
        }
        let mut items = Vec::new();
        for class in 0..self.classes {
            let header = Header::unpack(self.header(cpu, class).load(Ordering::Acquire));
            if header == self.dormant() {
                continue;
            }
            let begin = self.begin(class);
            for index in begin..header.current as usize {
                items.push(self.slot(cpu, index).load(Ordering::Relaxed) as usize);
            }
            let empty = Header { current: begin as u32, ..header };
            self.header(cpu, class).store(empty.pack(), Ordering::Release);
        }
        self.state(cpu).store(STATE_OPEN, Ordering::Release);
        items
    }

    /// The value in `class`'s first free slot on `cpu`: where a push in
    /// progress has already written its item, before its commit.
    pub fn peek_next_slot(&self, cpu: u32, class: usize) -> usize {
        let header = Header::unpack(self.header(cpu, class).load(Ordering::Acquire));
        self.slot(cpu, header.current as usize).load(Ordering::Acquire) as usize
    }

    /// Every item in the slab; only meaningful when no section is running.
    pub fn contents(&self) -> Vec<usize> {
        let mut items = Vec::new();
        for cpu in 0..self.ncpus {
            assert_eq!(
                self.slot(cpu, self.shared_sentinel()).load(Ordering::Relaxed) as usize,
                SENTINEL_BIT,
                "shared sentinel overwritten"
            );
            for class in 0..self.classes {
                let header = Header::unpack(self.header(cpu, class).load(Ordering::Acquire));
                if header == self.dormant() {
                    continue;
                }
                let begin = self.begin(class);
                assert!(begin <= header.current as usize && header.current <= header.end, "header out of range");
                assert_eq!(header.end as usize, begin + self.capacity, "sections must not write `end`");
                assert_eq!(
                    self.slot(cpu, begin - 1).load(Ordering::Relaxed) as usize,
                    SENTINEL_BIT,
                    "sentinel overwritten"
                );
                for index in begin..header.current as usize {
                    items.push(self.slot(cpu, index).load(Ordering::Relaxed) as usize);
                }
            }
        }
        items
    }
}

impl<I: CpuIndex> Drop for TestSlab<I> {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `new`, no longer referenced.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}

/// Tokens `16, 32, 48, ...` and, for each, whether someone holds it now.
/// Taking a token someone already holds is a duplicate: the bug the 6.19
/// tcmalloc regression showed as "malloc returned the same pointer twice".
pub struct Ledger {
    held: Vec<AtomicU8>,
    duplicates: AtomicU64,
}

impl Ledger {
    /// `count` tokens, all held by the caller.
    pub fn new(count: usize) -> Ledger {
        Ledger { held: (0..count).map(|_| AtomicU8::new(1)).collect(), duplicates: AtomicU64::new(0) }
    }

    /// All the tokens.
    pub fn tokens(&self) -> impl DoubleEndedIterator<Item = usize> + '_ {
        (0..self.held.len()).map(|i| (i + 1) << 4)
    }

    fn index(&self, token: usize) -> usize {
        assert!(token & 15 == 0 && token >= 16 && token >> 4 <= self.held.len(), "not a token: {token:#x}");
        (token >> 4) - 1
    }

    /// Records that the caller now holds `token` (async-signal-safe).
    pub fn take(&self, token: usize) {
        if self.held[self.index(token)].swap(1, Ordering::AcqRel) != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that the caller is about to publish `token` (async-signal-safe).
    pub fn give(&self, token: usize) {
        self.held[self.index(token)].store(0, Ordering::Release);
    }

    /// Tokens handed out while already held.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Checks that `found` holds every token exactly once.
    pub fn assert_conserved(&self, mut found: Vec<usize>) {
        found.sort_unstable();
        let expected: Vec<usize> = self.tokens().collect();
        if found != expected {
            let mut seen = std::collections::HashMap::new();
            for token in &found {
                *seen.entry(*token).or_insert(0) += 1;
            }
            let lost = expected.iter().filter(|t| !seen.contains_key(t)).count();
            let doubled = seen.values().filter(|&&n| n > 1).count();
            panic!(
                "tokens not conserved: {} found, {} expected, {lost} lost, {doubled} duplicated",
                found.len(),
                expected.len()
            );
        }
        assert_eq!(self.duplicates(), 0, "a token was handed out while already held");
    }
}
