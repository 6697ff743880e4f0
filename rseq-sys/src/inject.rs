//! Fault injection: numbered delay points inside and around the critical
//! sections, compiled in only with the `inject` feature (tests), so that
//! aborts are caused on purpose rather than hoped for.
//!
//! | point | where |
//! |---|---|
//! | 1 | inside, just after the descriptor is armed |
//! | 2 | inside, after the header or slot load |
//! | 3 | inside, just before the committing store |
//! | 4 | around: before the section is armed (inputs already computed) |
//! | 5 | around: after the section, committed or not |
//!
//! A point spins `DELAY_LOOPS[n]` iterations; a long spin inside a section
//! makes preemption, migration and signals land there, each one an abort; a
//! spin around it makes them land just outside, where they must do nothing.

use core::sync::atomic::{AtomicU32, Ordering};

/// Number of injection points (index 0 is unused).
pub const POINTS: usize = 6;

/// Spin iterations per point, read by the assembly.
#[cfg_attr(not(feature = "inject"), allow(dead_code))]
pub(crate) static DELAY_LOOPS: [AtomicU32; POINTS] = [const { AtomicU32::new(0) }; POINTS];

/// Whether this build has injection points.
pub const ENABLED: bool = cfg!(feature = "inject");

/// Makes point `point` spin `loops` iterations each time it is crossed
/// (no effect in a build without the `inject` feature).
pub fn set_delay(point: usize, loops: u32) {
    DELAY_LOOPS[point].store(loops, Ordering::Relaxed);
}
