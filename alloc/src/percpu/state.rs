//! What the upkeep and the capacity policy keep of each CPU, in the CPU's
//! own region (beside the class headers): plain atomics, so that a region
//! never opened, all zeros, holds a valid state.

use rseq_sys::slab_layout::SLOT_BYTES;

use crate::size_class::CLASSES;
use crate::sync::{AtomicU32, AtomicU64};

/// Per CPU and class: refills and drains, halved at every round (so a
/// class that refills now and then never counts as one that only drains),
/// and the header's `current` at the last round (any push or pop moves it).
#[repr(C)]
pub(super) struct ClassState {
    pub(super) refills: AtomicU32,
    pub(super) drains: AtomicU32,
    pub(super) last_current: AtomicU32,
    /// The class's current run of misses the same way (`adapt::step_run`).
    pub(super) run: AtomicU32,
    /// The thread of the class's last miss (`adapt::thread_tag`).
    pub(super) last_thread: AtomicU32,
    /// When the class last turned while it could grow (µs, wrapping: only
    /// differences below `capacity::GROW_WINDOW_US` matter).
    pub(super) last_turn: AtomicU32,
}

/// What the upkeep keeps of one CPU: its region's fingerprint at the last
/// round, and each class's state. It lives in the CPU's region, on the
/// headers' page (`slots::Layout::state_slot`), where a CPU in use has a page
/// resident anyway; zero bytes, as a fresh region has, are a valid state.
#[repr(C)]
pub(super) struct UpkeepState {
    pub(super) fingerprint: AtomicU64,
    pub(super) classes: [ClassState; CLASSES + 1],
}

/// Bytes of [`UpkeepState`], kept in every region.
pub(crate) const UPKEEP_STATE_BYTES: usize = core::mem::size_of::<UpkeepState>();

const _: () = assert!(core::mem::align_of::<UpkeepState>() <= SLOT_BYTES);
