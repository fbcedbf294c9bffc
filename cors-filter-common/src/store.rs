//! Stores that stay stores.
//!
//! rustc writes a struct assignment, or a struct built from
//! `..Default::default()`, as one `memset` or `memcpy` of the whole struct,
//! and the BPF target turns those into calls to a byte-at-a-time loop:
//! zeroing a 368-byte request head cost more than reading the head. LLVM
//! also merges runs of plain stores back into such calls. Hot paths
//! therefore write their state a field at a time through [`put`], whose
//! volatile stores are never merged, and list the fields with an exhaustive
//! pattern, so that a field added to the struct fails to compile there.

/// Writes `value` to `place` as one store.
#[inline(always)]
pub fn put<T: Copy>(place: &mut T, value: T) {
    // SAFETY: `place` is a valid, aligned, exclusive reference.
    unsafe { core::ptr::write_volatile(place, value) }
}

/// Plain data that may be copied a 64-bit word at a time: 8-byte aligned,
/// a multiple of 8 bytes long, without padding.
///
/// # Safety
/// The implementing type must be as above.
pub unsafe trait Words: Copy {}

/// Copies `from` into `to` a 64-bit word at a time, each a [`put`].
#[inline(always)]
pub fn copy_words<T: Words>(to: &mut T, from: &T) {
    const { assert!(core::mem::align_of::<T>() >= 8 && core::mem::size_of::<T>().is_multiple_of(8)) };
    let to = (to as *mut T).cast::<u64>();
    let from = (from as *const T).cast::<u64>();
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: both point to a `T`, which `Words` makes an array of
        // initialised, aligned `u64`s; `i` is within it.
        unsafe { to.add(i).write_volatile(from.add(i).read()) };
        i += 1;
    }
}
