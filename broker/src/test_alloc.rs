//! A counting global allocator for the unit tests: the heap bytes each thread has asked
//! for and not yet given back, so a test can measure what a structure it builds costs while
//! other tests run beside it on other threads.
//!
//! Counts the sizes asked for (`Layout::size`), not what the system allocator rounds them
//! up to or its own per-allocation header. Memory one thread allocates and another frees
//! skews both threads' counts: a test that measures keeps its structure on one thread.
//!
//! Never: compiled outside `cargo test`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// Heap bytes this thread has allocated and not freed, since it started.
pub(crate) fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

fn add(bytes: isize) {
    // A thread that is exiting has no counter any more: its last frees are not counted.
    let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
}

struct Counting;

// SAFETY: every call is passed to `System` unchanged; the counting around it touches only
// a thread-local `Cell` with a const initialiser, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation here is).
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller's contract for `realloc` is passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;
