//! Where parallel work is dispatched. Every parallel loop of the engine goes through
//! [`Threads::chunks`].
//!
//! The pool is small and spin-waiting, as llama.cpp's is: a forward pass is hundreds of short
//! parallel operations, and waking sleeping threads (or a work-stealing pool's injection and
//! latch) for each costs more than the smallest of them. `n - 1` workers spin for a while on an
//! epoch counter after each job, then park; the calling thread takes pieces too, and returns
//! once every worker has checked in (so the job, which lives on the caller's stack, is never
//! touched after `chunks` returns). A second caller arriving while a job runs (another session
//! on another thread, or a nested call) runs its loop inline.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(300);

/// One parallel loop: `run(first, count)` over ranges covering `0..n_items`, claimed by the
/// threads as they come ([`take_pieces`]).
struct Job<'a> {
    run: &'a (dyn Fn(usize, usize) + Sync),
    n_items: usize,
    align: usize,
    threads: usize,
}

struct Shared {
    /// Bumped for every job (and at shutdown).
    epoch: AtomicUsize,
    /// The current job (a `Job` on the caller's stack, valid until every worker checked in).
    job: AtomicPtr<Job<'static>>,
    /// First item not yet claimed.
    next: AtomicUsize,
    /// Workers done with the current epoch.
    done: AtomicUsize,
    /// A piece panicked on a worker.
    panicked: AtomicBool,
    stop: AtomicBool,
}

pub struct Threads {
    n: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held by the caller whose job is running.
    busy: Mutex<()>,
}

impl Threads {
    /// A pool of `n` threads (`0` = the available cores), the caller being one of them.
    pub fn new(n: usize) -> Result<Threads> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for i in 1..n {
            let s = Arc::clone(&shared);
            let w = std::thread::Builder::new()
                .name(format!("hearth-{i}"))
                .spawn(move || worker(&s))
                .map_err(|e| EngineError::ThreadPool(e.to_string()))?;
            workers.push(w);
        }
        Ok(Threads {
            n,
            shared,
            workers,
            busy: Mutex::new(()),
        })
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// A pool of one: the caller runs every job itself (for work too small to share).
    pub fn serial() -> &'static Threads {
        static SERIAL: std::sync::OnceLock<Threads> = std::sync::OnceLock::new();
        SERIAL.get_or_init(|| Threads::new(1).expect("a pool of one spawns no thread"))
    }

    /// Splits `n_items` items into ranges (a multiple of `align` items each except the last)
    /// and calls `f(first_item, count)` for each, in parallel: for callers whose pieces are
    /// not contiguous slices (a column range of a matrix).
    pub fn ranges(&self, n_items: usize, align: usize, f: impl Fn(usize, usize) + Sync + Send) {
        if n_items == 0 {
            return;
        }
        if self.workers.is_empty() || n_items <= align {
            return f(0, n_items);
        }
        let Ok(_guard) = self.busy.try_lock() else {
            return f(0, n_items);
        };
        self.run(&f, n_items, align.max(1));
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
        let (len, n_items) = (out.len(), out.len() / unit);
        let base = SendPtr(out.as_mut_ptr());
        self.ranges(n_items, align, |first, count| {
            let start = first * unit;
            // The last piece also takes a tail shorter than a unit.
            let end = if first + count == n_items {
                len
            } else {
                start + count * unit
            };
            let base = &base;
            // SAFETY: `ranges` hands out each range once and ranges are disjoint, so pieces are
            // disjoint and inside `out`, which stays borrowed until every worker has checked in.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
            f(first, piece);
        });
    }

    fn run(&self, run: &(dyn Fn(usize, usize) + Sync), n_items: usize, align: usize) {
        let s = &*self.shared;
        let job = Job {
            run,
            n_items,
            align,
            threads: self.n,
        };
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        // The pointer is only read by workers until they check in below.
        s.job
            .store((&job as *const Job).cast_mut().cast(), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| take_pieces(&job, s)));
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < self.workers.len() {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        s.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a worker thread panicked in a parallel loop");
        }
    }
}

/// The size of the next piece when `left` items are unclaimed ("guided" scheduling): a share
/// of what is left, so the first pieces are long (a product streams its rows in long runs that
/// its prefetches stay ahead of) and the last ones short (the threads finish together), a
/// multiple of `align` but for the very last.
fn piece(left: usize, threads: usize, align: usize) -> usize {
    left.div_ceil(2 * threads)
        .div_ceil(align)
        .saturating_mul(align)
        .min(left)
}

/// A pointer into a `&mut [T]` shared by the pool's threads, each writing its own disjoint part.
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: used only to hand disjoint pieces of a `&mut [T]` (T: Send) to the pool's threads.
unsafe impl<T: Send> Sync for SendPtr<T> {}

fn take_pieces(job: &Job, s: &Shared) {
    let mut first = s.next.load(Ordering::Relaxed);
    while first < job.n_items {
        let n = piece(job.n_items - first, job.threads, job.align);
        match s
            .next
            .compare_exchange_weak(first, first + n, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                (job.run)(first, n);
                first = s.next.load(Ordering::Relaxed);
            }
            Err(now) => first = now,
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        let t0 = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            spins += 1;
            if spins.is_multiple_of(256) && t0.elapsed() > SPIN {
                std::thread::park_timeout(Duration::from_millis(10));
            } else {
                std::hint::spin_loop();
            }
        };
        seen = epoch;
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let ptr = s.job.load(Ordering::Relaxed);
        if !ptr.is_null() {
            // SAFETY: the caller keeps the job alive until this worker increments `done`.
            let job = unsafe { &*ptr };
            if catch_unwind(AssertUnwindSafe(|| take_pieces(job, s))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_once_in_many_small_jobs() {
        let t = Threads::new(3).unwrap();
        for round in 0..2000 {
            let n = 1 + round % 97;
            let mut v = vec![0usize; n * 3];
            t.chunks(&mut v, 3, 1 + round % 4, |first, piece| {
                for (i, x) in piece.iter_mut().enumerate() {
                    *x += first * 3 + i + 1;
                }
            });
            assert!(
                v.iter().enumerate().all(|(i, &x)| x == i + 1),
                "round {round}"
            );
        }
    }

    #[test]
    fn nested_and_concurrent_calls_run() {
        let t = Arc::new(Threads::new(2).unwrap());
        let mut hs = Vec::new();
        for _ in 0..3 {
            let t = Arc::clone(&t);
            hs.push(std::thread::spawn(move || {
                for _ in 0..200 {
                    let mut v = vec![0u32; 64];
                    t.chunks(&mut v, 1, 1, |first, piece| {
                        let mut inner = vec![0u32; piece.len()];
                        t.chunks(&mut inner, 1, 1, |f2, p2| {
                            p2.iter_mut()
                                .enumerate()
                                .for_each(|(i, x)| *x = (f2 + i) as u32);
                        });
                        for (i, x) in piece.iter_mut().enumerate() {
                            *x = (first + i) as u32 + inner[i] - i as u32;
                        }
                    });
                    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
    }
}
