//! Activation buffers reused from one operation, layer and batch to the next.
//!
//! A forward pass makes a few dozen activation matrices per layer, megabytes each for a long
//! batch. Fresh allocations of that size come from the operating system as untouched pages, so
//! every one is faulted in and zeroed again (~10% of a 512-token prefill); the buffers here are
//! kept and handed out again instead.

use std::cell::RefCell;

#[derive(Default)]
pub(crate) struct Buffers {
    free: RefCell<Vec<Vec<f32>>>,
}

impl Buffers {
    /// A buffer of `n` floats whose contents are unspecified (stale values of an earlier use,
    /// or zeros): for outputs that are written whole.
    pub fn take(&self, n: usize) -> Vec<f32> {
        let mut free = self.free.borrow_mut();
        // The smallest buffer that holds `n`, else the largest (grown: the fewest bytes move).
        let fits = (0..free.len())
            .filter(|&i| free[i].capacity() >= n)
            .min_by_key(|&i| free[i].capacity());
        let pick = fits.or_else(|| (0..free.len()).max_by_key(|&i| free[i].capacity()));
        let mut v = pick.map(|i| free.swap_remove(i)).unwrap_or_default();
        if v.len() >= n {
            v.truncate(n);
        } else {
            v.resize(n, 0.0);
        }
        v
    }

    /// Returns a buffer for later [`take`](Self::take)s.
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() > 0 {
            self.free.borrow_mut().push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_best_fit_and_sized_as_asked() {
        let b = Buffers::default();
        let big = b.take(1000);
        let small = b.take(10);
        assert_eq!((big.len(), small.len()), (1000, 10));
        let (big_ptr, small_ptr) = (big.as_ptr(), small.as_ptr());
        b.give(big);
        b.give(small);
        // The smallest that fits.
        let s = b.take(8);
        assert_eq!((s.len(), s.as_ptr()), (8, small_ptr));
        let l = b.take(500);
        assert_eq!((l.len(), l.as_ptr()), (500, big_ptr));
        b.give(l);
        // Too small for any: the largest grows, keeping what it held.
        let g = b.take(2000);
        assert_eq!(g.len(), 2000);
        assert!(g[1000..].iter().all(|&x| x == 0.0));
    }
}
