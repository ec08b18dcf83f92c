//! Writing an encoded frame or line straight into a buffer's reserved room.
//!
//! Owns: the two raw writers the hot encoders share (`put`: bytes; `put_decimal`: a number's
//! decimal digits), each returning the position after what it wrote, so an encoder reserves
//! once and then copies its parts in without a capacity check per part.
//!
//! Never: reserves, checks capacity or sets a buffer's length: the caller reserves the
//! whole length first and sets it after the last part, as its `SAFETY` note says.

/// Copies `bytes` to `at` and returns the position after them.
///
/// # Safety
/// `at` must be valid for writing `bytes.len()` bytes, and not overlap `bytes`.
#[inline(always)]
pub(crate) unsafe fn put(at: *mut u8, bytes: &[u8]) -> *mut u8 {
    // SAFETY: the caller's guarantee.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
        at.add(bytes.len())
    }
}

/// Writes the `digits` decimal digits of `n` (as many as it has) to `at` and returns the
/// position after them.
///
/// # Safety
/// `at` must be valid for writing `digits` bytes.
#[inline(always)]
pub(crate) unsafe fn put_decimal(at: *mut u8, mut n: u64, digits: usize) -> *mut u8 {
    let mut i = digits;
    while i > 0 {
        i -= 1;
        // SAFETY: `i < digits`, within what the caller made writable.
        unsafe { at.add(i).write(b'0' + (n % 10) as u8) };
        n /= 10;
    }
    // SAFETY: as above; one past the last digit.
    unsafe { at.add(digits) }
}
