//! The only module that imports atomics: `core`'s normally, loom's under
//! `cfg(rseq_alloc_loom)`, so the models in `tests/` check the real code.

#[cfg(rseq_alloc_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(rseq_alloc_loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicIsize, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// This thread's identity in a lock word or a region's state word: its
/// thread pointer (on targets without rseq sections, `pthread_self`),
/// never 0, and aligned (never one of the states' small constants).
#[cfg(not(rseq_alloc_loom))]
pub(crate) fn current_thread() -> usize {
    let me = rseq_sys::thread_pointer();
    debug_assert_ne!(me, 0);
    me
}

/// Loom runs every model thread on one OS thread: use the address of a
/// loom thread-local instead.
#[cfg(rseq_alloc_loom)]
pub(crate) fn current_thread() -> usize {
    loom::thread_local! {
        static MARK: u64 = 0;
    }
    MARK.with(|mark| mark as *const u64 as usize)
}

/// Atomic operations named by their memory order, so that every call site
/// says what it guarantees (`load_acquire`, `cas_acq_rel`) and a bare
/// `Ordering` appears nowhere else. A compare-and-swap's name gives its
/// success order; it fails with `Relaxed`, but `cas_acq_rel` (fails with
/// `Acquire`, as a failed attempt to take a state reads what the holder
/// published).
#[allow(dead_code)] // Each configuration (loom models, the allocator) uses a different subset.
pub(crate) trait AtomicOps {
    /// The value held.
    type Value: Copy;
    /// Loads with `Relaxed`.
    fn load_relaxed(&self) -> Self::Value;
    /// Loads with `Acquire`.
    fn load_acquire(&self) -> Self::Value;
    /// Loads with `SeqCst`.
    fn load_seq_cst(&self) -> Self::Value;
    /// Stores with `Relaxed`.
    fn store_relaxed(&self, value: Self::Value);
    /// Stores with `Release`.
    fn store_release(&self, value: Self::Value);
    /// Stores with `SeqCst`.
    fn store_seq_cst(&self, value: Self::Value);
    /// Swaps with `Relaxed`.
    fn swap_relaxed(&self, value: Self::Value) -> Self::Value;
    /// Swaps with `AcqRel`.
    fn swap_acq_rel(&self, value: Self::Value) -> Self::Value;
    /// Swaps with `SeqCst`.
    fn swap_seq_cst(&self, value: Self::Value) -> Self::Value;
    /// Compare-and-swap, `Relaxed` both ways.
    fn cas_relaxed(&self, current: Self::Value, new: Self::Value) -> Result<Self::Value, Self::Value>;
    /// Compare-and-swap, `Acquire` on success.
    fn cas_acquire(&self, current: Self::Value, new: Self::Value) -> Result<Self::Value, Self::Value>;
    /// Compare-and-swap, `Release` on success.
    fn cas_release(&self, current: Self::Value, new: Self::Value) -> Result<Self::Value, Self::Value>;
    /// Compare-and-swap, `AcqRel` on success and `Acquire` on failure.
    fn cas_acq_rel(&self, current: Self::Value, new: Self::Value) -> Result<Self::Value, Self::Value>;
    /// Compare-and-swap, `AcqRel` on success and `Relaxed` on failure.
    fn cas_acq_rel_fail_relaxed(&self, current: Self::Value, new: Self::Value) -> Result<Self::Value, Self::Value>;
    /// Compare-and-swap, `SeqCst` on success.
    fn cas_seq_cst(&self, current: Self::Value, new: Self::Value) -> Result<Self::Value, Self::Value>;
}

/// Read-modify-write arithmetic named by its memory order (counters and bit sets).
#[allow(dead_code)] // As for `AtomicOps`.
pub(crate) trait AtomicIntOps: AtomicOps {
    /// Adds with `Relaxed`; returns the value before.
    fn fetch_add_relaxed(&self, value: Self::Value) -> Self::Value;
    /// Adds with `SeqCst`; returns the value before.
    fn fetch_add_seq_cst(&self, value: Self::Value) -> Self::Value;
    /// Subtracts with `Relaxed`; returns the value before.
    fn fetch_sub_relaxed(&self, value: Self::Value) -> Self::Value;
    /// Ors with `Release`; returns the value before.
    fn fetch_or_release(&self, value: Self::Value) -> Self::Value;
    /// Ands with `Release`; returns the value before.
    fn fetch_and_release(&self, value: Self::Value) -> Self::Value;
}

macro_rules! atomic_ops {
    ($([$($generic:ident),*] $atomic:ty => $value:ty),* $(,)?) => {$(
        impl<$($generic),*> AtomicOps for $atomic {
            type Value = $value;
            #[inline(always)]
            fn load_relaxed(&self) -> $value { self.load(Ordering::Relaxed) }
            #[inline(always)]
            fn load_acquire(&self) -> $value { self.load(Ordering::Acquire) }
            #[inline(always)]
            fn load_seq_cst(&self) -> $value { self.load(Ordering::SeqCst) }
            #[inline(always)]
            fn store_relaxed(&self, value: $value) { self.store(value, Ordering::Relaxed) }
            #[inline(always)]
            fn store_release(&self, value: $value) { self.store(value, Ordering::Release) }
            #[inline(always)]
            fn store_seq_cst(&self, value: $value) { self.store(value, Ordering::SeqCst) }
            #[inline(always)]
            fn swap_relaxed(&self, value: $value) -> $value { self.swap(value, Ordering::Relaxed) }
            #[inline(always)]
            fn swap_acq_rel(&self, value: $value) -> $value { self.swap(value, Ordering::AcqRel) }
            #[inline(always)]
            fn swap_seq_cst(&self, value: $value) -> $value { self.swap(value, Ordering::SeqCst) }
            #[inline(always)]
            fn cas_relaxed(&self, current: $value, new: $value) -> Result<$value, $value> {
                self.compare_exchange(current, new, Ordering::Relaxed, Ordering::Relaxed)
            }
            #[inline(always)]
            fn cas_acquire(&self, current: $value, new: $value) -> Result<$value, $value> {
                self.compare_exchange(current, new, Ordering::Acquire, Ordering::Relaxed)
            }
            #[inline(always)]
            fn cas_release(&self, current: $value, new: $value) -> Result<$value, $value> {
                self.compare_exchange(current, new, Ordering::Release, Ordering::Relaxed)
            }
            #[inline(always)]
            fn cas_acq_rel(&self, current: $value, new: $value) -> Result<$value, $value> {
                self.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            }
            #[inline(always)]
            fn cas_acq_rel_fail_relaxed(&self, current: $value, new: $value) -> Result<$value, $value> {
                self.compare_exchange(current, new, Ordering::AcqRel, Ordering::Relaxed)
            }
            #[inline(always)]
            fn cas_seq_cst(&self, current: $value, new: $value) -> Result<$value, $value> {
                self.compare_exchange(current, new, Ordering::SeqCst, Ordering::Relaxed)
            }
        }
    )*};
}

macro_rules! atomic_int_ops {
    ($($atomic:ty => $value:ty),* $(,)?) => {$(
        impl AtomicIntOps for $atomic {
            #[inline(always)]
            fn fetch_add_relaxed(&self, value: $value) -> $value { self.fetch_add(value, Ordering::Relaxed) }
            #[inline(always)]
            fn fetch_add_seq_cst(&self, value: $value) -> $value { self.fetch_add(value, Ordering::SeqCst) }
            #[inline(always)]
            fn fetch_sub_relaxed(&self, value: $value) -> $value { self.fetch_sub(value, Ordering::Relaxed) }
            #[inline(always)]
            fn fetch_or_release(&self, value: $value) -> $value { self.fetch_or(value, Ordering::Release) }
            #[inline(always)]
            fn fetch_and_release(&self, value: $value) -> $value { self.fetch_and(value, Ordering::Release) }
        }
    )*};
}

atomic_ops!([] AtomicBool => bool, [] AtomicU32 => u32, [] AtomicU64 => u64, [] AtomicUsize => usize);
atomic_int_ops!(AtomicU32 => u32, AtomicU64 => u64, AtomicUsize => usize);

#[cfg(not(rseq_alloc_loom))]
atomic_ops!([] AtomicU8 => u8, [] AtomicIsize => isize);
#[cfg(not(rseq_alloc_loom))]
atomic_int_ops!(AtomicU8 => u8);

#[cfg(not(rseq_alloc_loom))]
atomic_ops!([T] AtomicPtr<T> => *mut T);
