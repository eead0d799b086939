//! The ring all-reduce, between replicas in one process.
//!
//! N replicas stand in a ring; each gradient is cut into N chunks. Replica r only ever sends to
//! replica r+1 and receives from r−1, so every link carries the same load, whatever N is:
//! ```text
//! reduce-scatter, N−1 steps: at step s, replica r sends chunk (r−s) mod N to r+1, which adds
//!     it to its own copy of that chunk. After N−1 steps replica r holds the full sum of
//!     chunk (r+1) mod N.
//! all-gather, N−1 steps: at step s, replica r sends chunk (r+1−s) mod N (a finished sum) to
//!     r+1, which overwrites its copy. After N−1 steps every replica holds every summed chunk.
//! ```
//! Each replica sends 2(N−1) messages of 1/N of the gradient: 2(N−1)/N × its bytes in all,
//! which tends to twice the gradient however many replicas there are. That is why NCCL and
//! MPI use it for large buffers, and the figure the network view reports as bus bandwidth.
//!
//! Here the "link" is a copy between host buffers: all of a step's messages are taken first
//! (everyone sends at once), then delivered. The order of the additions is fixed, so the result
//! is the same on every run, and since the finished chunks are copied, every replica ends with
//! the same bits.

use super::{AllReduce, Traffic};
use crate::error::{Error, Result};

/// One message on the ring: a chunk of the sender's gradient, as it would go on a wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The training step and the message's number within that step's all-reduce.
    pub step: u64,
    pub seq: u32,
    pub from: usize,
    pub to: usize,
    /// Which chunk of the gradient the payload is.
    pub chunk: usize,
    pub payload: Vec<f32>,
    /// CRC-32 over the header fields and the payload's bytes, set by the sender and checked
    /// by the receiver: a message damaged on the way is caught, not summed.
    pub checksum: u32,
}

impl Message {
    /// CRC-32 over the header fields and the payload (what the sender stamps and the
    /// receiver checks).
    pub fn crc(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.step.to_le_bytes());
        h.update(&self.seq.to_le_bytes());
        h.update(&(self.from as u64).to_le_bytes());
        h.update(&(self.chunk as u64).to_le_bytes());
        h.update(bytemuck::cast_slice(&self.payload));
        h.finalize()
    }
}

/// Faults to inject into the ring's messages (`--fault`), to see what one lost or damaged
/// message does to a step, and what a slow link does to its time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// For each (step, replica): drop the first message the replica sends at that global step.
    pub lose: Vec<(u64, usize)>,
    /// For each (step, replica): flip one bit of the first message it sends at that step.
    pub corrupt: Vec<(u64, usize)>,
    /// Delay every message by this long.
    pub slow: Option<std::time::Duration>,
    /// How long a receiver waits for a message before declaring it lost.
    pub timeout: std::time::Duration,
}

/// The in-process ring over `replicas` replicas.
pub struct Ring {
    replicas: usize,
    /// One outgoing message per replica, reused every step (allocate once).
    outbox: Vec<Message>,
    /// Send each value as f16 (`--grad-dtype f16`): half the bytes on the link.
    f16_wire: bool,
    faults: Faults,
}

impl Ring {
    pub fn new(replicas: usize) -> Self {
        Ring {
            replicas,
            outbox: Vec::new(),
            f16_wire: false,
            faults: Faults {
                timeout: std::time::Duration::from_secs(2),
                ..Faults::default()
            },
        }
    }

    /// Injects `faults` into the messages.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Gradients travel as f16, as PyTorch DDP's fp16 compression hook sends them: every
    /// message's values are rounded to f16 (2 bytes each) before they go, and added in f32 on
    /// arrival. Each hop rounds the partial sum it forwards, so the result carries f16's
    /// relative error (about 5e-4) a few times over; the bytes on the link halve.
    pub fn with_f16_wire(mut self, on: bool) -> Self {
        self.f16_wire = on;
        self
    }

    /// Elements of chunk `c` when `len` elements are cut into `n` chunks.
    fn chunk(len: usize, n: usize, c: usize) -> std::ops::Range<usize> {
        super::part(len, n, c)
    }
}

impl AllReduce for Ring {
    fn describe(&self) -> String {
        format!(
            "ring all-reduce between {} in-process replicas (2×{} steps per sync, host buffers{}{})",
            self.replicas,
            self.replicas.saturating_sub(1),
            if self.f16_wire {
                ", f16 on the wire"
            } else {
                ""
            },
            match self.faults.slow {
                Some(d) => format!(
                    ", every message delayed {:.1} ms (--fault slow-link)",
                    d.as_secs_f64() * 1e3
                ),
                None => String::new(),
            }
        )
    }

    fn world(&self) -> usize {
        self.replicas
    }

    fn all_reduce(&mut self, step: u64, grads: &mut [&mut [f32]]) -> Result<Vec<Traffic>> {
        let n = grads.len();
        if n != self.replicas {
            return Err(Error::Config(format!(
                "the ring has {} replicas but {n} gradients were given",
                self.replicas
            )));
        }
        let len = grads.first().map_or(0, |g| g.len());
        if grads.iter().any(|g| g.len() != len) {
            return Err(Error::Config("replicas' gradients differ in length".into()));
        }
        let mut traffic = vec![Traffic::default(); n];
        if n == 1 {
            return Ok(traffic);
        }
        self.outbox.resize_with(n, || Message {
            step: 0,
            seq: 0,
            from: 0,
            to: 0,
            chunk: 0,
            payload: Vec::new(),
            checksum: 0,
        });
        let f = self.faults.clone();
        let (mut lost, mut damaged) = (None, None);
        let mut seq = 0u32;
        // Phase 0: reduce-scatter (receivers add); phase 1: all-gather (receivers overwrite).
        for phase in 0..2 {
            if phase == 1 && self.f16_wire {
                // Replica r now owns the finished sum of chunk r+1. Everyone else will get it
                // as f16, so the owner rounds its own copy too: all replicas hold the same bits.
                for (r, g) in grads.iter_mut().enumerate() {
                    for v in &mut g[Ring::chunk(len, n, (r + 1) % n)] {
                        *v = half::f16::from_f32(*v).to_f32();
                    }
                }
            }
            for s in 0..n - 1 {
                // Everyone sends...
                for (r, msg) in self.outbox.iter_mut().enumerate() {
                    let chunk = if phase == 0 {
                        (r + n - s % n) % n
                    } else {
                        (r + 1 + n - s % n) % n
                    };
                    let range = Ring::chunk(len, n, chunk);
                    msg.step = step;
                    msg.seq = seq;
                    msg.from = r;
                    msg.to = (r + 1) % n;
                    msg.chunk = chunk;
                    msg.payload.clear();
                    msg.payload.extend_from_slice(&grads[r][range]);
                    let value_bytes = if self.f16_wire {
                        for v in msg.payload.iter_mut() {
                            *v = half::f16::from_f32(*v).to_f32();
                        }
                        2
                    } else {
                        4
                    };
                    traffic[r].sent += value_bytes * msg.payload.len() as u64;
                    traffic[r].messages += 1;
                    seq += 1;
                    msg.checksum = msg.crc();
                    if let Some(d) = f.slow {
                        std::thread::sleep(d);
                    }
                    if f.lose.contains(&(step, r)) && lost.is_none() {
                        lost = Some(msg.seq);
                    }
                    if f.corrupt.contains(&(step, r)) && damaged.is_none() {
                        damaged = Some(msg.seq);
                        msg.payload[0] = f32::from_bits(msg.payload[0].to_bits() ^ (1 << 22));
                    }
                }
                // ...then everyone receives.
                for msg in &self.outbox {
                    let what = |fault: String| {
                        Error::LinkFault(format!(
                            "global step {step}: the all-reduce message {} from replica {} to replica {} {fault}",
                            msg.seq, msg.from, msg.to
                        ))
                    };
                    if lost == Some(msg.seq) {
                        // The receiver waits for it as long as it would on a real link, then
                        // gives up: a lost message is only ever noticed by its absence.
                        std::thread::sleep(f.timeout);
                        return Err(what(format!(
                            "never arrived (lost: nothing within the {:.1} s timeout)",
                            f.timeout.as_secs_f64()
                        )));
                    }
                    if msg.crc() != msg.checksum {
                        return Err(what(format!(
                            "arrived damaged (its checksum {:08x} does not match its contents, {:08x})",
                            msg.checksum,
                            msg.crc()
                        )));
                    }
                    let range = Ring::chunk(len, n, msg.chunk);
                    let mine = &mut grads[msg.to][range];
                    if phase == 0 {
                        for (m, &p) in mine.iter_mut().zip(&msg.payload) {
                            *m += p;
                        }
                    } else {
                        mine.copy_from_slice(&msg.payload);
                    }
                    let value_bytes = if self.f16_wire { 2 } else { 4 };
                    traffic[msg.to].received += value_bytes * msg.payload.len() as u64;
                }
            }
        }
        Ok(traffic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_replica_ends_with_the_same_sum() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (n, len) in [(2, 10), (3, 101), (4, 7), (5, 3)] {
            let mut grads: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..len).map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect();
            let want: Vec<f64> = (0..len)
                .map(|i| grads.iter().map(|g| g[i] as f64).sum())
                .collect();
            let mut ring = Ring::new(n);
            let mut views: Vec<&mut [f32]> = grads.iter_mut().map(|g| g.as_mut_slice()).collect();
            let traffic = ring.all_reduce(7, &mut views).unwrap();
            for g in &grads {
                assert_eq!(g, &grads[0], "replicas must agree bit for bit");
                for (a, b) in g.iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
                }
            }
            // 2(N−1) messages; the chunks' sizes add up to 2(N−1)/N of the gradient (exactly,
            // when N divides its length).
            for t in &traffic {
                assert_eq!(t.messages, 2 * (n as u64 - 1));
            }
            let sent: u64 = traffic.iter().map(|t| t.sent).sum();
            let received: u64 = traffic.iter().map(|t| t.received).sum();
            assert_eq!(sent, (2 * (n - 1) * len * 4) as u64);
            assert_eq!(sent, received, "every byte sent arrives");
        }
    }
}
