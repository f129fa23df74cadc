//! Wipes what a request leaves behind in a component instance's linear memory, so that an
//! instance kept for a later request (the host's instance reuse, docs/architecture.md "Instance
//! reuse") holds no readable residue of the earlier ones:
//!
//! - [`Scrubbing`] wraps a global allocator and zeroes every block when it is freed, and the old
//!   block of every `realloc` (which always moves here, so no freed tail is left unwiped);
//! - [`scrub_stack`] zeroes the part of the shadow stack (wasm32's stack in linear memory) below
//!   the caller's frame that earlier calls dirtied, page by page, until it meets
//!   [`CLEAN_PAGES_TO_STOP`] clean pages in a row: the cost follows what the request used.
//!
//! The component's crates forbid `unsafe`; a global allocator cannot be written without it, so it
//! lives here, in a crate of its own, each `unsafe` with its reason. The wipes are ordinary
//! `write_bytes` (a `memory.fill`) followed by [`core::hint::black_box`] of the pointer and a
//! compiler fence, so that the compiler cannot drop them as dead stores before `free`; the
//! integration test `test_instance_reuse.py` checks the result on the compiled component by
//! scanning its memory for a marker after requests that carried it.
#![no_std]
#![allow(
    unsafe_code,
    reason = "a global allocator and a stack wipe are unsafe by nature; each block says why it holds"
)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{compiler_fence, Ordering};

/// A global allocator that zeroes memory before handing it back to `A`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scrubbing<A>(A);

impl<A> Scrubbing<A> {
    pub const fn new(inner: A) -> Self {
        Scrubbing(inner)
    }
}

/// Zeroes `len` bytes at `ptr` so that the stores survive optimisation.
///
/// # Safety
/// `ptr..ptr + len` must be writable memory that nothing else uses.
#[inline]
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: the caller owns the block (it is being freed).
    unsafe { core::ptr::write_bytes(ptr, 0, len) };
    // The block is about to be freed: without these the zeroing is a dead store.
    core::hint::black_box(ptr);
    compiler_fence(Ordering::SeqCst);
}

// SAFETY: every method forwards to `A` with the same layouts `A` handed out; `dealloc` and
// `realloc` only add a wipe of a block the caller is giving up, and `realloc` is an allocation of
// the new layout, a copy of the overlap and a `dealloc` of the old block, which GlobalAlloc's
// contract allows.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Scrubbing<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `alloc`'s.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes that the caller gives up.
        unsafe {
            wipe(ptr, layout.size());
            self.0.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc requires `new_size`, rounded up to `layout.align()`, not to
        // overflow isize, so the new layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has a non-zero size (realloc's contract).
        let new = unsafe { self.0.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; the copy stays within the smaller one;
            // the old block is then given up as `realloc` requires.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Pages scanned below the caller's frame in one call: the stack is dirty only as deep as some
/// request went, and zero below that (never touched, or wiped by an earlier call).
pub const PAGE: usize = 4096;
/// Clean pages in a row after which [`scrub_stack`] stops: a frame would have to hold this much
/// untouched (or zero) stack for a dirty page below it to be missed; the component has no such
/// frame (its largest stack buffers are a few KiB).
pub const CLEAN_PAGES_TO_STOP: usize = 16;
/// Bytes just below the caller's frame that are left alone: room for this function's own frame.
const OWN_FRAME: usize = 256;

#[cfg(target_arch = "wasm32")]
extern "C" {
    /// The lowest address of the shadow stack (defined by wasm-ld).
    static __stack_low: u8;
}

/// The lowest address of the stack, or `None` where there is no shadow stack in linear memory.
#[cfg(target_arch = "wasm32")]
fn stack_low() -> Option<usize> {
    // Only the symbol's address is taken (safe for an extern static); wasm-ld defines it.
    Some(core::ptr::addr_of!(__stack_low) as usize)
}

#[cfg(not(target_arch = "wasm32"))]
fn stack_low() -> Option<usize> {
    None
}

/// Zeroes the stack below the caller's frame as deep as earlier calls dirtied it; returns how many
/// bytes it zeroed. Call it when a request's work has returned (its frames are popped), just before
/// the export returns to the host. Does nothing where the stack is not in linear memory.
#[inline(never)]
pub fn scrub_stack() -> usize {
    let Some(low) = stack_low() else { return 0 };
    let here = 0u8;
    let sp = core::hint::black_box(core::ptr::addr_of!(here)) as usize;
    let Some(top) = sp.checked_sub(OWN_FRAME).map(|t| t & !7) else { return 0 };
    if top <= low {
        return 0;
    }
    let mut wiped = 0;
    let mut end = top;
    let mut clean = 0;
    while end > low && clean < CLEAN_PAGES_TO_STOP {
        let start = ((end - 1) & !(PAGE - 1)).max(low);
        let start = (start + 7) & !7;
        if start >= end {
            break;
        }
        // SAFETY: `start..end` lies between the stack's low end and this function's frame: stack
        // that no live frame uses (it is below the lowest one). Accesses are 8-byte aligned and
        // volatile, with no call in between that could put a frame there.
        let dirty = unsafe { dirty(start, end) };
        if dirty {
            // SAFETY: as above.
            unsafe { zero(start, end) };
            wiped += end - start;
            clean = 0;
        } else {
            clean += 1;
        }
        end = start;
    }
    compiler_fence(Ordering::SeqCst);
    wiped
}

/// Whether any word in `start..end` (8-aligned) is non-zero.
///
/// # Safety
/// The range must be readable, unused memory.
unsafe fn dirty(start: usize, end: usize) -> bool {
    let mut p = start;
    while p < end {
        // SAFETY: the caller's range, 8-aligned.
        if unsafe { core::ptr::read_volatile(p as *const u64) } != 0 {
            return true;
        }
        p += 8;
    }
    false
}

/// Zeroes `start..end` (8-aligned) with volatile stores (no `memset` call: its frame, if it had
/// one, would land in the range).
///
/// # Safety
/// The range must be writable, unused memory.
unsafe fn zero(start: usize, end: usize) {
    let mut p = start;
    while p < end {
        // SAFETY: the caller's range, 8-aligned.
        unsafe { core::ptr::write_volatile(p as *mut u64, 0) };
        p += 8;
    }
}

#[cfg(test)]
#[allow(clippy::undocumented_unsafe_blocks, reason = "test code: raw blocks from the allocator under test")]
mod tests {
    extern crate std;
    use super::Scrubbing;
    use core::alloc::{GlobalAlloc, Layout};
    use std::alloc::System;
    use std::vec::Vec;

    /// Records what each freed block held at the moment it reached the inner allocator.
    struct Recording {
        freed: std::sync::Mutex<Vec<Vec<u8>>>,
    }

    // SAFETY: forwards to System; `dealloc` reads the block before freeing it.
    unsafe impl GlobalAlloc for Recording {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let bytes = unsafe { core::slice::from_raw_parts(ptr, layout.size()) }.to_vec();
            self.freed.lock().unwrap().push(bytes);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[test]
    fn freed_and_moved_blocks_reach_the_inner_allocator_zeroed() {
        let a = Scrubbing::new(Recording { freed: Default::default() });
        let layout = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            core::ptr::write_bytes(p, 0xAB, 64);
            let q = a.realloc(p, layout, 200);
            assert!(!q.is_null());
            assert!(core::slice::from_raw_parts(q, 64).iter().all(|b| *b == 0xAB), "contents kept");
            let bigger = Layout::from_size_align(200, 8).unwrap();
            core::ptr::write_bytes(q, 0xCD, 200);
            let r = a.realloc(q, bigger, 16);
            assert!(core::slice::from_raw_parts(r, 16).iter().all(|b| *b == 0xCD), "contents kept");
            a.dealloc(r, Layout::from_size_align(16, 8).unwrap());
        }
        let freed = a.0.freed.lock().unwrap();
        assert_eq!(freed.iter().map(Vec::len).collect::<Vec<_>>(), [64, 200, 16]);
        assert!(freed.iter().all(|b| b.iter().all(|x| *x == 0)), "every freed block was wiped");
    }

    #[test]
    fn the_stack_wipe_is_a_no_op_off_wasm() {
        assert_eq!(super::scrub_stack(), 0);
    }
}
