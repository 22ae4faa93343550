//! Where parallel work is dispatched. Every parallel loop of the engine goes through
//! [`Threads::chunks`], so the pool behind it (a rayon pool for now) can be swapped for a
//! spin-waiting one without touching the math.

use crate::error::{EngineError, Result};

pub struct Threads {
    pool: Option<rayon::ThreadPool>,
    n: usize,
}

impl Threads {
    /// A pool of `n` threads (`0` = the available cores); one thread runs inline.
    pub fn new(n: usize) -> Result<Threads> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let pool = if n > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("hearth-{i}"))
                    .build()
                    .map_err(|e| EngineError::ThreadPool(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Threads { pool, n })
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Splits `out` into pieces of whole items (`unit` elements each, a multiple of `align`
    /// items per piece except the last) and calls `f(first_item, piece)` for each, in parallel.
    pub fn chunks<T: Send>(
        &self,
        out: &mut [T],
        unit: usize,
        align: usize,
        f: impl Fn(usize, &mut [T]) + Sync + Send,
    ) {
        let unit = unit.max(1);
        let n_items = out.len() / unit;
        if n_items == 0 {
            return;
        }
        let pool = match &self.pool {
            Some(p) if n_items > align => p,
            _ => return f(0, out),
        };
        // A few pieces per thread so that uneven pieces even out.
        let pieces = self.n * 4;
        let align = align.max(1);
        let per = n_items.div_ceil(pieces).div_ceil(align) * align;
        pool.install(|| {
            use rayon::prelude::*;
            out.par_chunks_mut(per * unit)
                .enumerate()
                .for_each(|(i, piece)| f(i * per, piece));
        });
    }
}
