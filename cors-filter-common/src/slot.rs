//! A value the eBPF verifier must not track precisely.
//!
//! The verifier explores a bounded loop iteration by iteration. A value
//! computed from the loop counter (say "the Origin header starts at byte
//! 215") is a different constant on every path, so the number of states it
//! has to keep grows with the square of the loop bound and the program is
//! rejected as too complex. A value stored in map memory and loaded back is
//! an unknown scalar to the verifier, which collapses those states into one.
//!
//! `Slot` forces that round trip: reads and writes are volatile, so the
//! compiler cannot keep the value in a register across the loop. In
//! userspace it is just a slightly slower field.
//!
//! The same holds for loop bounds: the exit test `k >= len` tells the
//! verifier that `len == k` on that exit, so a `len` register that stays
//! live after the loop is a different constant on each of the bound's exit
//! paths, and everything after the loop is verified once per exit. Loop
//! bounds are therefore read from their slot in the test itself and again
//! after the loop, never kept in a register across it.

/// A field whose every access goes through memory.
#[repr(transparent)]
#[derive(Default)]
pub struct Slot<T: Copy>(T);

impl<T: Copy> Slot<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    #[inline(always)]
    pub fn get(&self) -> T {
        // SAFETY: `&self.0` is a valid, aligned reference to an initialised `T`.
        unsafe { core::ptr::read_volatile(&self.0) }
    }

    #[inline(always)]
    pub fn set(&mut self, value: T) {
        // SAFETY: `&mut self.0` is a valid, aligned, exclusive reference.
        unsafe { core::ptr::write_volatile(&mut self.0, value) }
    }
}
