//! A counting global allocator for the allocation tests (`ws_alloc.rs`, `tls_alloc.rs`):
//! per thread, the bytes live, their peak since [`peak_of`] began, and (while
//! [`log_frees`] runs) the sizes of the blocks freed. Each test binary that uses it declares
//! it as its allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: counting::Counting = counting::Counting;
//! ```
//!
//! Never allocates itself: it touches only const-initialised thread-locals without
//! destructors.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Sizes of freed blocks [`log_frees`] keeps at most.
pub const LOG_SLOTS: usize = 64;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LOGGING: Cell<bool> = const { Cell::new(false) };
    static LOGGED: Cell<usize> = const { Cell::new(0) };
    static LOG: [Cell<usize>; LOG_SLOTS] = const { [const { Cell::new(0) }; LOG_SLOTS] };
}

fn track(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn log_free(size: usize) {
    if LOGGING.try_with(Cell::get).unwrap_or(false) {
        let _ = LOGGED.try_with(|n| {
            let i = n.get();
            if i < LOG_SLOTS {
                let _ = LOG.try_with(|log| log[i].set(size));
            }
            n.set(i + 1);
        });
    }
}

/// Bytes allocated on this thread and not freed yet.
pub fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Runs `f` and returns the peak of live bytes it added on this thread.
pub fn peak_of(f: impl FnOnce()) -> isize {
    let base = live();
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(Cell::get) - base
}

/// Runs `f` and returns the sizes of the blocks it freed on this thread (the first
/// [`LOG_SLOTS`]).
pub fn log_frees(f: impl FnOnce()) -> Vec<usize> {
    LOGGED.with(|n| n.set(0));
    LOGGING.with(|l| l.set(true));
    f();
    LOGGING.with(|l| l.set(false));
    let n = LOGGED.with(Cell::get).min(LOG_SLOTS);
    LOG.with(|log| log[..n].iter().map(Cell::get).collect())
}

/// The system allocator, counted.
pub struct Counting;

// SAFETY: every call forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counting touches only const-initialised thread-locals
// without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see above).
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
        log_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}
