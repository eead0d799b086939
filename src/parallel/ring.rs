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

use super::all_reduce::{part, AllReduce, Traffic};
use crate::error::{Error, Result};

/// The ring's two halves. The in-process ring and the ring across MPI ranks send the same
/// chunks in the same order and treat what arrives the same way; this is where they agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Receivers add the chunk to their own copy: after N−1 steps each holds one chunk's sum.
    ReduceScatter,
    /// Receivers overwrite their copy with the finished sum: after N−1 steps everyone has all.
    AllGather,
}

impl Phase {
    /// Both halves, in order.
    pub(super) const BOTH: [Phase; 2] = [Phase::ReduceScatter, Phase::AllGather];

    /// The chunk replica `r` of `n` sends at step `s` (0 ≤ s < n−1) of this half.
    pub(super) fn chunk_sent(self, r: usize, s: usize, n: usize) -> usize {
        match self {
            Phase::ReduceScatter => (r + n - s % n) % n,
            Phase::AllGather => (r + 1 + n - s % n) % n,
        }
    }

    /// What the receiver does with an arriving chunk `payload` on its own copy `mine`.
    pub(super) fn receive(self, mine: &mut [f32], payload: &[f32]) {
        match self {
            Phase::ReduceScatter => {
                for (m, &p) in mine.iter_mut().zip(payload) {
                    *m += p;
                }
            }
            Phase::AllGather => mine.copy_from_slice(payload),
        }
    }
}

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
        part(len, n, c)
    }

    /// The length every gradient has, once checked: one gradient per replica, all alike.
    fn checked_len(&self, grads: &[&mut [f32]]) -> Result<usize> {
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
        Ok(len)
    }

    /// Bytes a value takes on the link.
    fn value_bytes(&self) -> u64 {
        if self.f16_wire {
            2
        } else {
            4
        }
    }

    /// Before the all-gather under `--grad-dtype f16`: replica r now owns the finished sum of
    /// chunk r+1. Everyone else will get it as f16, so the owner rounds its own copy too: all
    /// replicas hold the same bits.
    fn round_owned_chunks_to_f16(grads: &mut [&mut [f32]], len: usize) {
        let n = grads.len();
        for (r, g) in grads.iter_mut().enumerate() {
            for v in &mut g[Ring::chunk(len, n, (r + 1) % n)] {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
    }

    /// Everyone sends: each replica's chunk for step `s` of `phase` goes into its outbox,
    /// stamped, counted, and (under `--fault`) delayed, marked lost or damaged.
    fn send_all(
        &mut self,
        (phase, s): (Phase, usize),
        grads: &[&mut [f32]],
        flight: &mut InFlight,
        traffic: &mut [Traffic],
    ) {
        let (n, len) = (grads.len(), grads[0].len());
        let value_bytes = self.value_bytes();
        let f = &self.faults;
        for (r, msg) in self.outbox.iter_mut().enumerate() {
            let chunk = phase.chunk_sent(r, s, n);
            let range = Ring::chunk(len, n, chunk);
            msg.step = flight.step;
            msg.seq = flight.seq;
            msg.from = r;
            msg.to = (r + 1) % n;
            msg.chunk = chunk;
            msg.payload.clear();
            msg.payload.extend_from_slice(&grads[r][range]);
            if self.f16_wire {
                for v in msg.payload.iter_mut() {
                    *v = half::f16::from_f32(*v).to_f32();
                }
            }
            traffic[r].sent += value_bytes * msg.payload.len() as u64;
            traffic[r].messages += 1;
            flight.seq += 1;
            msg.checksum = msg.crc();
            if let Some(d) = f.slow {
                std::thread::sleep(d);
            }
            if f.lose.contains(&(flight.step, r)) && flight.lost.is_none() {
                flight.lost = Some(msg.seq);
            }
            if f.corrupt.contains(&(flight.step, r)) && flight.damaged.is_none() {
                flight.damaged = Some(msg.seq);
                msg.payload[0] = f32::from_bits(msg.payload[0].to_bits() ^ (1 << 22));
            }
        }
    }

    /// ...then everyone receives: each message is checked (a lost one is noticed by its
    /// absence, after the timeout; a damaged one by its checksum) and then added or copied.
    fn receive_all(
        &self,
        phase: Phase,
        grads: &mut [&mut [f32]],
        flight: &InFlight,
        traffic: &mut [Traffic],
    ) -> Result<()> {
        let (n, len) = (grads.len(), grads[0].len());
        let step = flight.step;
        for msg in &self.outbox {
            let what = |fault: String| {
                Error::LinkFault(format!(
                    "global step {step}: the all-reduce message {} from replica {} to replica {} {fault}",
                    msg.seq, msg.from, msg.to
                ))
            };
            if flight.lost == Some(msg.seq) {
                // The receiver waits for it as long as it would on a real link, then
                // gives up: a lost message is only ever noticed by its absence.
                std::thread::sleep(self.faults.timeout);
                return Err(what(format!(
                    "never arrived (lost: nothing within the {:.1} s timeout)",
                    self.faults.timeout.as_secs_f64()
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
            phase.receive(&mut grads[msg.to][range], &msg.payload);
            traffic[msg.to].received += self.value_bytes() * msg.payload.len() as u64;
        }
        Ok(())
    }
}

/// One all-reduce's messages in flight: its step, the next sequence number, and which message
/// (if any) a `--fault` lost or damaged.
struct InFlight {
    step: u64,
    seq: u32,
    lost: Option<u32>,
    damaged: Option<u32>,
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
        let len = self.checked_len(grads)?;
        let n = grads.len();
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
        let mut flight = InFlight {
            step,
            seq: 0,
            lost: None,
            damaged: None,
        };
        for phase in Phase::BOTH {
            if phase == Phase::AllGather && self.f16_wire {
                Ring::round_owned_chunks_to_f16(grads, len);
            }
            for s in 0..n - 1 {
                self.send_all((phase, s), grads, &mut flight, &mut traffic);
                self.receive_all(phase, grads, &flight, &mut traffic)?;
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
