//! A few persistent worker threads that run the parts of one job together with the calling
//! thread, for jobs far shorter than a thread wake-up.
//!
//! A training step on the CPU has two parallel regions of about 50-100 µs each. Handing them to
//! a general thread pool means waking a sleeping thread twice per step, which on a virtual
//! machine costs tens of microseconds each time: on the 2-core VM this was measured on, the
//! hand-offs ate the whole gain of the second core. These workers instead spin (burning their
//! core) for a while after each job, so the next job, a few microseconds later, starts at once;
//! only after a long idle spell do they sleep. It is the same trade a GPU driver or an MPI
//! library makes when it busy-polls instead of blocking: latency bought with a core.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const IDLE: u32 = 0;
const POSTED: u32 = 1;
const DONE: u32 = 2;
const QUIT: u32 = 3;
/// How long an idle worker spins before it sleeps.
const SPIN_FOR: Duration = Duration::from_millis(2);

/// A job: called with the index of the part to run.
type Job = dyn Fn(usize) + Sync;

/// A raw pointer to the job, so it can cross to the workers. Sound because [`Workers::run`]
/// does not return until every worker has finished with it.
#[derive(Clone, Copy)]
struct JobPtr(*const Job);
unsafe impl Send for JobPtr {}

struct Slot {
    state: AtomicU32,
    job: Mutex<Option<JobPtr>>,
    panicked: AtomicU32,
}

/// `parts − 1` helper threads; the caller runs part 0 itself.
pub struct Workers {
    slots: Vec<Arc<Slot>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `parts − 1` helpers (none for `parts` ≤ 1).
    pub fn new(parts: usize) -> Self {
        let mut slots = Vec::new();
        let mut threads = Vec::new();
        for i in 1..parts.max(1) {
            let slot = Arc::new(Slot {
                state: AtomicU32::new(IDLE),
                job: Mutex::new(None),
                panicked: AtomicU32::new(0),
            });
            let s = slot.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gpu-train cpu worker {i}"))
                .spawn(move || worker(&s, i))
                .expect("starting a CPU worker thread");
            slots.push(slot);
            threads.push(handle);
        }
        Workers { slots, threads }
    }

    /// How many parts a job is split into (the helpers plus the caller).
    pub fn parts(&self) -> usize {
        self.slots.len() + 1
    }

    /// Runs `job(0)` here and `job(1..parts)` on the helpers, and returns when all are done.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        // SAFETY: the pointer's lifetime is erased, but every worker is done with it before
        // this function returns (we wait for DONE below), so it never outlives `job`.
        let ptr =
            JobPtr(unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(job) });
        for (slot, t) in self.slots.iter().zip(&self.threads) {
            *slot.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(ptr);
            slot.state.store(POSTED, Ordering::Release);
            t.thread().unpark();
        }
        job(0);
        for slot in &self.slots {
            while slot.state.load(Ordering::Acquire) != DONE {
                std::hint::spin_loop();
            }
            slot.state.store(IDLE, Ordering::Relaxed);
            if slot.panicked.swap(0, Ordering::Relaxed) != 0 {
                panic!("a CPU worker thread panicked");
            }
        }
    }
}

fn worker(slot: &Slot, part: usize) {
    let mut idle_since = Instant::now();
    loop {
        match slot.state.load(Ordering::Acquire) {
            POSTED => {
                let job = slot.job.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(JobPtr(f)) = job {
                    // SAFETY: `run` keeps the job alive until we store DONE.
                    let f = unsafe { &*f };
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(part))).is_err() {
                        slot.panicked.store(1, Ordering::Relaxed);
                    }
                }
                slot.state.store(DONE, Ordering::Release);
                idle_since = Instant::now();
            }
            QUIT => return,
            _ if idle_since.elapsed() < SPIN_FOR => std::hint::spin_loop(),
            _ => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (slot, t) in self.slots.iter().zip(&self.threads) {
            slot.state.store(QUIT, Ordering::Release);
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_once_per_job() {
        for parts in 1..=3 {
            let w = Workers::new(parts);
            let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..1000 {
                w.run(&|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1000));
        }
    }
}
