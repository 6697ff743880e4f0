//! Hardened mode: checks on every block's memory, for finding heap misuse
//! (writes past either end of a block, writes into a freed block, double and
//! mismatched frees). The runtime turns it on with `RSEQ_ALLOC_HARDENED=1`
//! ([`arm`], once, before the first block is handed out); off by default,
//! and then it costs the fast path nothing: a bit of the fast-path word
//! sends every operation to the slow path, where the front calls this
//! module, which calls only the tiers below the front.
//!
//! # A hardened block
//!
//! ```text
//! ptr              ptr + n             ptr + n + w            ptr + cap - 8  ptr + cap
//!  | caller's n bytes | PATTERN (w bytes) | (untouched / poison)  | tail word    |
//! ```
//!
//! A request of `n` bytes takes a block of at least `n + OVERHEAD` bytes
//! (`cap` of them). Its last word, the *tail*, holds `n ^ key(ptr)`, where
//! `key` mixes the block's address with a per-process secret; the
//! `w = min(WINDOW, cap - 8 - n)` bytes after the request hold [`PATTERN`].
//! A freed small block is filled with [`POISON`], tail included. Fresh
//! spans are poisoned when they are carved, so every free small object is
//! poison.
//!
//! # The checks (each failure aborts with one line naming the call, the check and the pointer)
//!
//! - **free / realloc / `malloc_usable_size`:** the tail decodes to a size
//!   that fits the block, and the pattern after it is intact (else: heap
//!   overflow); the tail is not poison (else: double free; freeing swaps
//!   poison into the tail atomically, so of two racing frees one wins and the
//!   other is reported); for a small block that is not the first of its span,
//!   the word just below it, its neighbour's tail, is poison or decodes
//!   (else: heap underflow); a sized free names the size that was asked for.
//! - **allocation:** a small block handed out must still be poison in every
//!   byte (else: write after free, with the offset of the first bad byte).
//!
//! Medium and huge blocks (above 64 KiB) get the tail and the pattern but no
//! poison: they go back to the page heap and the OS when freed, so a write
//! after free lands in memory that is not (or not yet) a block.
//!
//! Every operation takes a slow path here, so allocating in a signal
//! handler is not safe in hardened mode (it is, on the fast path, otherwise).
//!
//! The allocator's own metadata is never in object memory (see the crate
//! docs), so none of these writes can redirect an allocation even when
//! hardened mode is off; hardened mode is about *reporting* them.

use core::ptr::null_mut;

use crate::central::CENTRAL;
use crate::huge;
use crate::os;
use crate::percpu::Marks;
use crate::report::{self, Call};
use crate::size_class::SIZES;
use crate::sync::{AtomicOps, AtomicU64};
use crate::tiers::{self, Block, Route};

/// Bytes a hardened block adds to every request: at least 8 pattern bytes,
/// then the tail word.
pub(crate) const OVERHEAD: usize = 16;
/// Most pattern bytes written and checked after a request.
const WINDOW: usize = 64;
/// What a free small block is filled with.
pub(crate) const POISON: u8 = 0xdf;
const POISON_WORD: u64 = u64::from_ne_bytes([POISON; 8]);
/// What follows the caller's bytes in a live block.
pub(crate) const PATTERN: u8 = 0xa5;

static SECRET: AtomicU64 = AtomicU64::new(0);

/// Readies hardened mode before the runtime publishes it: the tail key's
/// secret, and poison in every span the central lists carve from then on.
/// Idempotent (racing initialisers may each call it).
pub(crate) fn arm() {
    let _ = SECRET.cas_relaxed(0, os::random_u64() | 1);
    CENTRAL.fill_fresh_spans_with(POISON);
}

fn key(ptr: *mut u8) -> u64 {
    let x = (ptr as u64 ^ SECRET.load_relaxed()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 31)
}

/// The request size a tail word encodes for the block at `ptr` of `cap`
/// bytes, if it is one that fits.
fn decode(ptr: *mut u8, cap: usize, word: u64) -> Option<usize> {
    let n = word ^ key(ptr);
    (n <= (cap - OVERHEAD) as u64).then_some(n as usize)
}

/// # Safety
/// `ptr` is a block of `cap >= OVERHEAD` bytes.
unsafe fn tail<'a>(ptr: *mut u8, cap: usize) -> &'a AtomicU64 {
    // SAFETY: the block's last word is inside it and 8-aligned (blocks are
    // 16-aligned and `cap` is a multiple of 16); neighbours read it atomically.
    unsafe { &*ptr.add(cap - 8).cast::<AtomicU64>() }
}

/// Writes the pattern after the caller's `n` bytes and the tail.
///
/// # Safety
/// `ptr` is a block of `cap >= n + OVERHEAD` bytes that this thread owns.
unsafe fn seal(ptr: *mut u8, n: usize, cap: usize) {
    let window = (cap - 8 - n).min(WINDOW);
    // SAFETY: `n + window <= cap - 8`, inside the block.
    unsafe {
        ptr.add(n).write_bytes(PATTERN, window);
        tail(ptr, cap).store_release(n as u64 ^ key(ptr));
    }
}

/// A block of `n` bytes aligned to `align`, sealed; zero-filled if `zeroed`.
#[inline(never)]
pub(crate) fn alloc(n: usize, align: usize, zeroed: bool, call: Call) -> *mut u8 {
    let Some(size) = n.checked_add(OVERHEAD) else { return null_mut() };
    let ptr = match tiers::route(size, align) {
        Route::Small(class) => tiers::alloc_small_slow(class, Marks::Kept),
        Route::Medium => match tiers::alloc_medium(size) {
            (ptr, false) if zeroed && !ptr.is_null() => {
                // SAFETY: a fresh medium block of at least `n` bytes.
                unsafe { ptr.write_bytes(0, n) };
                ptr
            }
            (ptr, _) => ptr,
        },
        Route::Huge => huge::alloc(size, align, zeroed),
    };
    if ptr.is_null() {
        return ptr;
    }
    let block = tiers::classify(ptr as usize, call);
    // SAFETY: `block` is what `ptr` is.
    let cap = unsafe { tiers::capacity(block) };
    if let Block::Small(_) = block {
        // SAFETY: a free small block of `cap` bytes, now ours.
        unsafe {
            check_poison(ptr, cap, call);
            if zeroed {
                ptr.write_bytes(0, n);
            }
        }
    }
    // SAFETY: the block holds `size <= cap` bytes and is ours.
    unsafe { seal(ptr, n, cap) };
    ptr
}

/// # Safety
/// `ptr` is a free small block of `cap` bytes that this thread owns.
unsafe fn check_poison(ptr: *mut u8, cap: usize, call: Call) {
    for offset in (0..cap).step_by(8) {
        // SAFETY: inside the block; 8-aligned.
        let word = unsafe { ptr.add(offset).cast::<u64>().read() };
        if word != POISON_WORD {
            let byte = word.to_ne_bytes().iter().position(|&b| b != POISON).unwrap_or(0);
            report::corrupted(call, b"write after free into block", ptr as usize, Some(offset + byte));
        }
    }
}

/// Checks the block at `ptr` as the module docs say; `claim` poisons its tail
/// (the block is being freed). Returns what it is, its capacity and the
/// caller's size.
fn check(ptr: *mut u8, call: Call, claim: bool) -> (Block, usize, usize) {
    let block = tiers::classify(ptr as usize, call);
    // SAFETY: `block` is what `ptr` is.
    let cap = unsafe { tiers::capacity(block) };
    // SAFETY: a block of ours is at least `OVERHEAD` bytes.
    let own_tail = unsafe { tail(ptr, cap) };
    let word = if claim { own_tail.swap_acq_rel(POISON_WORD) } else { own_tail.load_acquire() };
    if word == POISON_WORD {
        report::double_free(call, ptr as usize);
    }
    let Some(n) = decode(ptr, cap, word) else {
        report::corrupted(call, b"heap overflow past the end of block", ptr as usize, None)
    };
    let window = (cap - 8 - n).min(WINDOW);
    // SAFETY: the pattern lies inside the block.
    let pattern = unsafe { core::slice::from_raw_parts(ptr.add(n), window) };
    if let Some(i) = pattern.iter().position(|&b| b != PATTERN) {
        report::corrupted(call, b"heap overflow past the end of block", ptr as usize, Some(n + i));
    }
    if let Block::Small(class) = block {
        let size = SIZES[class] as usize;
        if tiers::span_offset(ptr as usize) != 0 {
            let below = (ptr as usize - size) as *mut u8;
            // SAFETY: the previous object of the same span, a block of `size` bytes.
            let word = unsafe { tail(below, size) }.load_acquire();
            if word != POISON_WORD && decode(below, size, word).is_none() {
                report::corrupted(call, b"heap underflow below block", ptr as usize, None);
            }
        }
    }
    (block, cap, n)
}

/// Frees a hardened block; `size`, when the caller knows it, must be the
/// size that was asked for.
///
/// # Safety
/// `ptr` is a block of this allocator (anything else is reported) and is not
/// used afterwards.
#[inline(never)]
pub(crate) unsafe fn free(ptr: *mut u8, size: Option<usize>, call: Call) {
    let (block, cap, n) = check(ptr, call, true);
    if let Some(size) = size
        && size != n
    {
        report::size_mismatch(call, ptr as usize, size, n);
    }
    match block {
        Block::Small(class) => {
            // SAFETY: the block is ours to poison (its tail already is).
            unsafe { ptr.write_bytes(POISON, cap - 8) };
            tiers::free_small_slow(class, ptr, Marks::Kept);
        }
        // SAFETY: checked above; the caller gives the block up.
        other => unsafe { tiers::free_block(ptr as usize, other) },
    }
}

/// The caller's size of a hardened block.
#[inline(never)]
pub(crate) fn usable_size(ptr: *mut u8) -> usize {
    check(ptr, Call::UsableSize, false).2
}

/// `realloc` of a hardened block: huge blocks move with `mremap` as usual;
/// everything else moves to a new block, so a stale pointer to the old one
/// is caught by the poison.
///
/// # Safety
/// `ptr` is a live block of this allocator allocated with `align`.
#[inline(never)]
pub(crate) unsafe fn realloc(ptr: *mut u8, old_size: Option<usize>, align: usize, new_n: usize) -> *mut u8 {
    let (block, _, n) = check(ptr, Call::Realloc, false);
    if let Some(size) = old_size
        && size != n
    {
        report::size_mismatch(Call::Realloc, ptr as usize, size, n);
    }
    let Some(size) = new_n.checked_add(OVERHEAD) else { return null_mut() };
    if let Block::Huge(seg) = block
        && tiers::route(size, align) == Route::Huge
    {
        // SAFETY: checked to be a live huge block.
        let resized = unsafe { huge::resize(seg, size) };
        if !resized.is_null() {
            // SAFETY: the resized block holds `size` bytes.
            unsafe { seal(resized, new_n, tiers::capacity(tiers::classify(resized as usize, Call::Realloc))) };
            return resized;
        }
    }
    let new = alloc(new_n, align, false, Call::Realloc);
    if new.is_null() {
        return new;
    }
    // SAFETY: both blocks are live and distinct; the copy fits both.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr, new, n.min(new_n));
        free(ptr, None, Call::Realloc);
    }
    new
}
