//! The C API's semantics (`rseq_alloc::c_api`, what `librseq_alloc.so`
//! exports), driven with any arguments, including sizes near `SIZE_MAX`,
//! overflowing products and alignments that are not powers of two. Each
//! answer is checked against the documented one: null with `errno = ENOMEM`
//! for sizes that cannot be served, `EINVAL` for bad alignments, alignment
//! and usable size of every block, `realloc`'s rules for null and zero, a
//! failed `realloc` leaving its block as it was, and contents preserved.

use core::ffi::c_void;

use rseq_alloc::c_api;

use crate::{Input, fill, first_mismatch};

const MAX_ACTIONS: usize = 2048;
/// Requests above this are not attempted unless they must fail (the
/// machine's memory is not what is being fuzzed).
const MAX_SERVED: usize = 16 << 20;
/// Anything above this must fail: it cannot fit `isize`.
const MUST_FAIL: usize = isize::MAX as usize;

struct Live {
    ptr: *mut c_void,
    size: usize,
    seed: u64,
    /// The alignment `free_aligned_sized` may name with `size` (16 for
    /// `free_sized`), if C23 allows a sized free of this block at all.
    sized_free: Option<usize>,
}

fn errno() -> i32 {
    // SAFETY: errno is thread-local and always addressable.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value };
}

/// Checks a fresh block of `size` bytes (aligned to `align`, zero if
/// `zeroed`) and fills it.
fn accept(ptr: *mut c_void, size: usize, align: usize, zeroed: bool, seed: u64, what: &str) -> Live {
    assert!(!ptr.is_null(), "{what}: null for {size} bytes");
    assert!((ptr as usize).is_multiple_of(align.max(16)), "{what}: {ptr:p} not aligned to {align}");
    // SAFETY: a live block of ours.
    let usable = unsafe { c_api::malloc_usable_size(ptr) };
    assert!(usable >= size, "{what}: usable size {usable} < {size}");
    if zeroed {
        // SAFETY: `size` bytes of a live block.
        assert_eq!(unsafe { crate::first_nonzero(ptr.cast(), size) }, None, "{what}: not zeroed");
    }
    // SAFETY: as above.
    unsafe { fill(ptr.cast(), size, seed) };
    Live { ptr, size, seed, sized_free: Some(align.max(16)) }
}

/// A failure must be a null with `ENOMEM`; it is allowed only for sizes the
/// fuzzer does not ask to be served.
fn refused(ptr: *mut c_void, size: usize, what: &str) -> bool {
    if size > MUST_FAIL {
        assert!(ptr.is_null(), "{what}: {size} bytes cannot be served, got {ptr:p}");
    }
    if ptr.is_null() {
        assert_eq!(errno(), libc::ENOMEM, "{what}: null without ENOMEM for {size} bytes");
        assert!(size > MAX_SERVED, "{what}: {size} bytes refused");
        return true;
    }
    false
}

fn check(block: &Live, len: usize, what: &str) {
    // SAFETY: the block is live and holds at least `len` bytes.
    if let Some(i) = unsafe { first_mismatch(block.ptr.cast(), block.size, len, block.seed) } {
        panic!("{what}: block {:p} ({} bytes) lost its contents at byte {i}", block.ptr, block.size);
    }
}

/// A size for the C API: [`Input::size`], or one that must fail.
fn c_size(input: &mut Input) -> usize {
    match input.byte() % 16 {
        0 => usize::MAX - (input.byte() as usize),
        1 => (isize::MAX as usize).wrapping_add(input.byte() as usize),
        _ => input.size(),
    }
}

/// Runs the calls `data` encodes.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut live: Vec<Live> = Vec::new();
    let mut seed = 1u64;
    for _ in 0..MAX_ACTIONS {
        if input.is_empty() {
            break;
        }
        seed += 1;
        set_errno(0);
        match input.byte() % 12 {
            0 => {
                let size = c_size(&mut input);
                if size > MAX_SERVED && size <= MUST_FAIL {
                    continue;
                }
                let ptr = c_api::malloc(size);
                if !refused(ptr, size, "malloc") {
                    live.push(accept(ptr, size, 16, false, seed, "malloc"));
                }
            }
            1 => {
                let (count, size) = (input.bits(3) as usize % 4096, c_size(&mut input));
                let total = count.checked_mul(size);
                if total.is_some_and(|t| t > MAX_SERVED && t <= MUST_FAIL) {
                    continue;
                }
                let ptr = c_api::calloc(count, size);
                let total = total.unwrap_or(usize::MAX);
                if !refused(ptr, total, "calloc") {
                    live.push(accept(ptr, total, 16, true, seed, "calloc"));
                }
            }
            2 | 3 => {
                // realloc of a live block (or of null when there is none).
                let size = c_size(&mut input);
                if size > MAX_SERVED && size <= MUST_FAIL {
                    continue;
                }
                if live.is_empty() {
                    // SAFETY: null is always accepted.
                    let ptr = unsafe { c_api::realloc(core::ptr::null_mut(), size) };
                    if size > 0 && !refused(ptr, size, "realloc(NULL)") {
                        live.push(accept(ptr, size, 16, false, seed, "realloc(NULL)"));
                    } else if size == 0 && !ptr.is_null() {
                        live.push(accept(ptr, 0, 16, false, seed, "realloc(NULL, 0)"));
                    }
                    continue;
                }
                let index = input.bits(2) as usize % live.len();
                let old = live.swap_remove(index);
                // SAFETY: a live block of ours.
                let ptr = unsafe { c_api::realloc(old.ptr, size) };
                if size == 0 {
                    assert!(ptr.is_null(), "realloc(p, 0) returns null after freeing");
                } else if refused(ptr, size, "realloc") {
                    check(&old, old.size, "after a failed realloc");
                    live.push(old);
                } else {
                    check(&Live { ptr, ..old }, old.size.min(size), "realloc");
                    live.push(accept(ptr, size, 16, false, seed, "realloc"));
                }
            }
            4 => {
                let align = match input.byte() % 4 {
                    0 => input.bits(3) as usize,
                    _ => 1 << (input.byte() % 23),
                };
                let size = c_size(&mut input);
                if size > MAX_SERVED && size <= MUST_FAIL {
                    continue;
                }
                // A marker that posix_memalign must not overwrite when it fails.
                let untouched = 0x5a50usize as *mut c_void;
                let mut out = untouched;
                // SAFETY: `out` is a valid place for a pointer.
                let status = unsafe { c_api::posix_memalign(&mut out, align, size) };
                let valid = align.is_power_of_two() && align.is_multiple_of(size_of::<*mut c_void>());
                if !valid {
                    assert_eq!(status, libc::EINVAL, "posix_memalign(align {align})");
                    assert_eq!(out, untouched, "posix_memalign wrote *out on EINVAL");
                } else if status == libc::ENOMEM {
                    assert!(size > MAX_SERVED, "posix_memalign({align}, {size}) refused");
                    assert_eq!(out, untouched, "posix_memalign wrote *out on ENOMEM");
                } else {
                    assert_eq!(status, 0);
                    live.push(accept(out, size, align, false, seed, "posix_memalign"));
                }
            }
            5 => {
                let align = match input.byte() % 4 {
                    0 => input.bits(3) as usize,
                    _ => 1 << (input.byte() % 23),
                };
                let size = input.size();
                // Not a power of two: rounded up, as glibc 2.36 does.
                let ptr = c_api::aligned_alloc(align, size);
                if ptr.is_null() {
                    assert_eq!(errno(), libc::ENOMEM);
                    assert!(size > MAX_SERVED, "aligned_alloc({align}, {size}) refused");
                } else {
                    let block = accept(ptr, size, align.next_power_of_two(), false, seed, "aligned_alloc");
                    // `free_aligned_sized` wants the alignment as given, a power of two.
                    live.push(if align.is_power_of_two() { block } else { Live { sized_free: None, ..block } });
                }
            }
            6 => {
                let align = input.bits(2) as usize % 8192 + 1;
                let size = input.size();
                let ptr = c_api::memalign(align, size);
                if ptr.is_null() {
                    assert_eq!(errno(), libc::ENOMEM);
                    assert!(size > MAX_SERVED, "memalign({align}, {size}) refused");
                } else {
                    live.push(Live {
                        sized_free: None,
                        ..accept(ptr, size, align.next_power_of_two(), false, seed, "memalign")
                    });
                }
            }
            7 => {
                let size = input.size();
                let (ptr, name) = if input.byte() & 1 == 0 {
                    (c_api::valloc(size), "valloc")
                } else {
                    (c_api::pvalloc(size), "pvalloc")
                };
                if !refused(ptr, size, name) {
                    let usable = if name == "pvalloc" { size.max(1).next_multiple_of(4096) } else { size };
                    live.push(Live { sized_free: None, ..accept(ptr, usable, 4096, false, seed, name) });
                }
            }
            8 | 9 if !live.is_empty() => {
                let index = input.bits(2) as usize % live.len();
                let block = live.swap_remove(index);
                check(&block, block.size, "before free");
                set_errno(12345);
                // SAFETY: a live block of ours, freed once.
                unsafe {
                    match block.sized_free {
                        Some(16) if input.byte() & 1 == 1 => c_api::free_sized(block.ptr, block.size),
                        Some(align) if input.byte() & 1 == 1 => c_api::free_aligned_sized(block.ptr, align, block.size),
                        _ => c_api::free(block.ptr),
                    }
                }
                assert_eq!(errno(), 12345, "free must preserve errno");
            }
            10 => {
                // SAFETY: null is accepted by both.
                unsafe {
                    c_api::free(core::ptr::null_mut());
                    assert_eq!(c_api::malloc_usable_size(core::ptr::null_mut()), 0);
                }
            }
            11 if !live.is_empty() => {
                let index = input.bits(2) as usize % live.len();
                let (count, size) = (input.bits(4) as usize, input.bits(4) as usize);
                if count.checked_mul(size).is_none() {
                    let block = &live[index];
                    // SAFETY: a live block of ours.
                    let ptr = unsafe { c_api::reallocarray(block.ptr, count, size) };
                    assert!(ptr.is_null() && errno() == libc::ENOMEM, "reallocarray overflow must fail");
                    check(block, block.size, "after an overflowing reallocarray");
                }
            }
            _ => {}
        }
    }
    for block in live {
        check(&block, block.size, "at the end");
        // SAFETY: a live block of ours, freed once.
        unsafe { c_api::free(block.ptr) };
    }
}
