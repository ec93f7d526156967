//! The guest's allocator (the global one on wasm): free lists per power-of-two size class over
//! the system allocator.
//!
//! A request is decoded by prost into many small owned `String`s and `Vec`s that all die when
//! it is answered, and the host reuses the instance for later requests. Freed small blocks go on
//! their class's list and are handed out again in a few instructions: never split, coalesced
//! or returned, so the instance's memory stays at its high-water mark (the host drops an
//! instance that grew large). Larger blocks and stricter alignments go to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest class: 16 bytes (room for the list link, and the largest common alignment).
const MIN_SHIFT: u32 = 4;
/// Classes 16, 32, ..., 4096 bytes.
const CLASSES: usize = 9;
/// The largest block served from the lists.
const MAX_SMALL: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);
/// Every block is aligned to this (chunks are, and classes are multiples of it).
const ALIGN: usize = 1 << MIN_SHIFT;
/// Fresh blocks are carved from chunks of this size taken from the system allocator.
const CHUNK: usize = 64 * 1024;

struct State {
    /// The first free block of each class; a free block's first word links to the next.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

/// Size-class free lists; see the module documentation.
pub struct SizeClasses(UnsafeCell<State>);

// SAFETY: wasm32-wasip2 guests are single-threaded (no shared memory, no threads), so the
// state is never touched by two threads. Natively the type is only used by one test thread.
#[cfg(target_arch = "wasm32")]
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    /// Empty lists and no chunk yet.
    pub const fn new() -> SizeClasses {
        SizeClasses(UnsafeCell::new(State {
            free: [ptr::null_mut(); CLASSES],
            next: ptr::null_mut(),
            end: ptr::null_mut(),
        }))
    }
}

impl Default for SizeClasses {
    fn default() -> Self {
        SizeClasses::new()
    }
}

/// The class serving `layout`, or none (system allocator).
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().max(ALIGN).next_power_of_two();
    Some((size.trailing_zeros() - MIN_SHIFT) as usize)
}

// SAFETY: blocks handed out are `1 << (class + MIN_SHIFT)` bytes, at least `layout.size()`,
// aligned to `ALIGN` ≥ `layout.align()`, and each is in at most one place: on a free list or
// with its owner. `dealloc`/`realloc` get the layout the block was allocated with (the
// `GlobalAlloc` contract), so they find the same class.
unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return System.alloc(layout);
        };
        let state = &mut *self.0.get();
        let head = state.free[class];
        if !head.is_null() {
            state.free[class] = *(head as *mut *mut u8);
            return head;
        }
        let size = 1usize << (class as u32 + MIN_SHIFT);
        if (state.end as usize) - (state.next as usize) < size {
            // The old chunk's tail (less than one block of this class) is left unused.
            let chunk = System.alloc(Layout::from_size_align_unchecked(CHUNK, ALIGN));
            if chunk.is_null() {
                return chunk;
            }
            state.next = chunk;
            state.end = chunk.add(CHUNK);
        }
        let block = state.next;
        state.next = block.add(size);
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(layout).is_none() {
            // The system allocator knows when fresh memory is already zero.
            return System.alloc_zeroed(layout);
        }
        let block = self.alloc(layout);
        if !block.is_null() {
            ptr::write_bytes(block, 0, layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            return System.dealloc(block, layout);
        };
        let state = &mut *self.0.get();
        *(block as *mut *mut u8) = state.free[class];
        state.free[class] = block;
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new_layout)) {
            (None, None) => System.realloc(block, layout, new_size),
            (Some(old), Some(new)) if old == new => block,
            _ => {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let class = |size, align| class_of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 8), Some(0));
        assert_eq!(class(17, 1), Some(1));
        assert_eq!(class(4096, 1), Some(CLASSES - 1));
        assert_eq!(class(4097, 1), None);
        assert_eq!(class(8, 32), None);
    }

    #[test]
    fn blocks_are_reused_aligned_and_keep_their_bytes() {
        let heap = SizeClasses::new();
        unsafe {
            let small = Layout::from_size_align(24, 8).unwrap();
            let a = heap.alloc(small);
            let b = heap.alloc(small);
            assert!(!a.is_null() && !b.is_null() && a != b);
            assert_eq!(a as usize % ALIGN, 0);
            assert_eq!(b as usize - a as usize, 32);
            ptr::write_bytes(a, 0xff, 24);
            heap.dealloc(a, small);
            // A reused block handed out zeroed is zero.
            let zeroed = heap.alloc_zeroed(small);
            assert_eq!(zeroed, a);
            assert!((0..24).all(|i| *zeroed.add(i) == 0));
            heap.dealloc(zeroed, small);
            // The freed block comes back first (LIFO), and only once.
            assert_eq!(heap.alloc(small), a);
            assert_ne!(heap.alloc(small), a);

            // Growing through classes and past them keeps the contents.
            let mut layout = Layout::from_size_align(10, 1).unwrap();
            let mut block = heap.alloc(layout);
            for i in 0..10 {
                *block.add(i) = i as u8;
            }
            for new_size in [12, 100, 3000, 10_000, 200_000, 50] {
                block = heap.realloc(block, layout, new_size);
                assert!(!block.is_null());
                layout = Layout::from_size_align(new_size, 1).unwrap();
                let kept: Vec<u8> = (0..10).map(|i| *block.add(i)).collect();
                assert_eq!(kept, (0..10).collect::<Vec<u8>>(), "after {new_size}");
            }
            heap.dealloc(block, layout);

            // Many blocks across chunk boundaries are distinct and writable.
            let page = Layout::from_size_align(4096, 16).unwrap();
            let blocks: Vec<*mut u8> = (0..40).map(|_| heap.alloc(page)).collect();
            for (i, &p) in blocks.iter().enumerate() {
                ptr::write_bytes(p, i as u8, 4096);
            }
            for (i, &p) in blocks.iter().enumerate() {
                assert_eq!(*p.add(4095), i as u8);
                heap.dealloc(p, page);
            }
        }
    }
}
