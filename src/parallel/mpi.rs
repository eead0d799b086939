//! Data parallelism across processes and machines through MPI (`mpirun`), the engine every
//! cluster has, with the same [`AllReduce`] seam as the in-process ring.
//!
//! One MPI rank is one process; it may hold several local replicas (`--devices 0,1` inside an
//! MPI job: one per GPU of that machine). A sync is then hierarchical, as the chapter draws it
//! (NVLink inside a server, the network across servers):
//! ```text
//! 1. inside the rank: the in-process ring sums the local replicas' gradients
//! 2. across ranks:    that local sum is summed over the ranks, over shared memory on one
//!                     machine, TCP (or InfiniBand, ...) between machines, either by
//!                     --allreduce ring (default): our ring over MPI point-to-point messages,
//!                        the chapter's algorithm, each message sequenced and checksummed;
//!                        the bytes counted are its payload, 2(N−1)/N of the gradient
//!                     --allreduce mpi: MPI_Allreduce, whose algorithm is the library's own
//!                        choice (for this 407 KB buffer Open MPI typically picks a ring or
//!                        recursive doubling); the bytes counted are the buffer handed to it
//! 3. inside the rank: the job-wide sum is copied to every local replica
//! ```

use super::all_reduce::{part, AcrossRanks, AllReduce, Traffic};
use super::ring::{Faults, Message, Phase, Ring};
use crate::engine::Totals;
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

/// This process's place in an MPI job.
pub struct MpiJob {
    world: SimpleCommunicator,
    pub rank: usize,
    pub ranks: usize,
    /// The rank's index among the ranks on its own machine (to pick a GPU).
    pub local_rank: usize,
    /// Finalizes MPI when dropped, so it is the last field (fields drop in order): keep the
    /// job alive for the whole run, and drop every communicator made from it first.
    _universe: Universe,
}

impl MpiJob {
    /// Joins the job `mpirun` started (a single process with no mpirun is a job of one rank).
    pub fn init() -> Result<MpiJob> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Config("MPI is already initialised in this process".into()))?;
        let world = universe.world().duplicate();
        // Ranks that share a machine (shared memory) form one group; our index in it is the
        // local rank, what Open MPI also exports as OMPI_COMM_WORLD_LOCAL_RANK.
        let local = world.split_shared(world.rank());
        Ok(MpiJob {
            rank: world.rank() as usize,
            ranks: world.size() as usize,
            local_rank: local.rank() as usize,
            world,
            _universe: universe,
        })
    }

    /// The all-reduce over this job, for `local` replicas in this process (every rank must
    /// have the same number; checked), summing across ranks by `across`, with `faults`
    /// injected into the ring's messages across ranks (replica index = rank).
    pub fn all_reduce(
        &self,
        local: usize,
        across: AcrossRanks,
        faults: Faults,
    ) -> Result<MpiAllReduce> {
        let mut counts = vec![0u64; self.ranks];
        self.world.all_gather_into(&(local as u64), &mut counts[..]);
        if let Some(r) = counts.iter().position(|&c| c != local as u64) {
            return Err(Error::Config(format!(
                "rank {r} has {} replica(s) and rank {} has {local}: every rank needs the same number",
                counts[r], self.rank
            )));
        }
        Ok(MpiAllReduce {
            world: self.world.duplicate(),
            rank: self.rank,
            ranks: self.ranks,
            local,
            ring: Ring::new(local),
            scratch: Vec::new(),
            across,
            faults,
            outgoing: Vec::new(),
            incoming: Vec::new(),
        })
    }

    /// Waits for every rank.
    pub fn barrier(&self) {
        self.world.barrier();
    }

    /// Ends the whole job with exit code `code` (MPI_Abort): what a rank that cannot go on
    /// does, because the other ranks would wait for it in their next collective forever
    /// (and MPI_Finalize, run when this process's MPI handle is dropped, would wait for them).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// The sum over the ranks of a count each holds (every rank gets it): allreduce-bench's
    /// #wrong, counted on each rank's own buffer.
    pub fn sum(&self, mine: u64) -> u64 {
        let mut all = 0u64;
        self.world.all_reduce_into(&mine, &mut all, SystemOperation::sum());
        all
    }

    /// Checks that every rank has the same value for each field (flag, value): the values
    /// are hashed and gathered; a difference names the flag and the ranks.
    pub fn agree(&self, fields: &[(&str, String)]) -> Result<()> {
        let hash = |v: &str| {
            v.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let mine: Vec<u64> = fields.iter().map(|(_, v)| hash(v)).collect();
        let mut all = vec![0u64; mine.len() * self.ranks];
        self.world.all_gather_into(&mine[..], &mut all[..]);
        let mut differ = Vec::new();
        for (f, (flag, value)) in fields.iter().enumerate() {
            let ranks: Vec<String> = (0..self.ranks)
                .filter(|&r| all[r * mine.len() + f] != all[f])
                .map(|r| r.to_string())
                .collect();
            if !ranks.is_empty() {
                differ.push(format!(
                    "{flag} (rank {} has {value}; rank(s) {} differ from rank 0)",
                    self.rank,
                    ranks.join(", ")
                ));
            }
        }
        if differ.is_empty() {
            return Ok(());
        }
        Err(Error::Config(format!(
            "the ranks of this MPI job were started with different settings: {}; every rank must train the same run",
            differ.join("; ")
        )))
    }
}

/// Sums the gradients of every replica of every rank.
pub struct MpiAllReduce {
    world: SimpleCommunicator,
    rank: usize,
    ranks: usize,
    local: usize,
    ring: Ring,
    scratch: Vec<f32>,
    across: AcrossRanks,
    faults: Faults,
    /// The ring's wire buffers across ranks: a header then the payload, as u32 words.
    outgoing: Vec<u32>,
    incoming: Vec<u32>,
}

/// Words of a ring message's header on the wire: step (2), seq, from, chunk, checksum.
const HEADER: usize = 6;

impl MpiAllReduce {
    /// Our ring across the ranks, on `sum` (this rank's local sum; on return the job's):
    /// N − 1 steps of reduce-scatter (each rank sends one chunk to its right neighbour and adds
    /// the chunk from its left) then N − 1 of all-gather (the finished chunks go round), the
    /// same chunks, order and additions as the in-process ring, so N ranks of one replica each
    /// compute the same bits as N in-process replicas. Returns what this rank sent.
    fn ring_across(&mut self, step: u64, sum: &mut [f32]) -> Result<Traffic> {
        let (n, r) = (self.ranks, self.rank);
        let mut t = Traffic::default();
        if n == 1 {
            return Ok(t);
        }
        let len = sum.len();
        let longest = (0..n).map(|c| part(len, n, c).len()).max().unwrap_or(0);
        let mut seq = 0u32;
        for phase in Phase::BOTH {
            for s in 0..n - 1 {
                let chunk = phase.chunk_sent(r, s, n);
                // The left neighbour sends the chunk one below ours.
                let expect = (chunk + n - 1) % n;
                let sent = self.frame((step, seq), chunk, &sum[part(len, n, chunk)]);
                let words = self.send_right_receive_left((step, seq), longest)?;
                let range = part(len, n, expect);
                let got = self.checked_arrival((step, seq), words, (expect, range.len()))?;
                phase.receive(&mut sum[range], &got.payload);
                t.sent += 4 * sent as u64;
                t.received += 4 * got.payload.len() as u64;
                t.messages += 1;
                seq += 1;
            }
        }
        Ok(t)
    }

    /// Message `seq` of `step`, carrying `payload` (chunk `chunk`), written into `outgoing`:
    /// the header words, then the payload's bits. Under `--fault corrupt-message` the first
    /// message of the step gets one bit flipped after its checksum was taken. Returns the
    /// payload's length in values.
    fn frame(&mut self, (step, seq): (u64, u32), chunk: usize, payload: &[f32]) -> usize {
        let r = self.rank;
        let msg = Message {
            step,
            seq,
            from: r,
            to: (r + 1) % self.ranks,
            chunk,
            payload: payload.to_vec(),
            checksum: 0,
        };
        self.outgoing.clear();
        self.outgoing.extend_from_slice(&[
            step as u32,
            (step >> 32) as u32,
            seq,
            r as u32,
            chunk as u32,
            msg.crc(),
        ]);
        self.outgoing
            .extend(msg.payload.iter().map(|v| v.to_bits()));
        if self.faults.corrupt.contains(&(step, r)) && seq == 0 {
            self.outgoing[HEADER] ^= 1 << 22;
        }
        msg.payload.len()
    }

    /// Sends `outgoing` to the right neighbour (unless `--fault lose-message` drops it) while
    /// receiving the left neighbour's message into `incoming`, room for a header and the
    /// `longest` chunk. Returns the words received.
    fn send_right_receive_left(&mut self, (step, seq): (u64, u32), longest: usize) -> Result<usize> {
        let (n, r) = (self.ranks, self.rank);
        let (right, left) = ((r + 1) % n, (r + n - 1) % n);
        let lose = self.faults.lose.contains(&(step, r)) && seq == 0;
        if let Some(d) = self.faults.slow {
            std::thread::sleep(d);
        }
        self.incoming.resize(HEADER + longest, 0);
        // A real link may be slow (a 1 Mbit/s lab link takes seconds a chunk): only a
        // run that injects lost messages gives up after the fault timeout; otherwise a
        // peer silent for 5 minutes is taken to be gone.
        let timeout = match self.faults.lose.is_empty() {
            true => std::time::Duration::from_secs(300),
            false => self.faults.timeout,
        };
        exchange(
            &self.world,
            (right, &self.outgoing, lose),
            (left, &mut self.incoming),
            timeout,
        )
        .map_err(|waited| {
            Error::LinkFault(format!(
                "global step {step}: the all-reduce message {seq} from rank {left} to rank {r} never arrived (nothing within {:.1} s)",
                waited.as_secs_f64()
            ))
        })
    }

    /// The `words` received, decoded and checked against what was expected: message `seq` of
    /// `step` from the left neighbour, chunk `expect` of `values` values, its checksum intact.
    /// A later message in its place means this one was lost.
    fn checked_arrival(
        &self,
        (step, seq): (u64, u32),
        words: usize,
        (expect, values): (usize, usize),
    ) -> Result<Message> {
        let (n, r) = (self.ranks, self.rank);
        let left = (r + n - 1) % n;
        let fault = |what: String| {
            Error::LinkFault(format!(
                "global step {step}: the all-reduce message {seq} from rank {left} to rank {r} {what}"
            ))
        };
        let Some(got) = decode(&self.incoming[..words], r) else {
            return Err(fault(format!("is {words} words, shorter than a header")));
        };
        if got.from == left && (got.step, got.seq) > (step, seq) {
            // A later message came in its place: a gap in the sequence numbers, the
            // way a lost packet is noticed.
            return Err(fault(format!(
                "never arrived (lost: message {} of step {} came in its place)",
                got.seq, got.step
            )));
        }
        if (got.step, got.seq, got.from, got.chunk) != (step, seq, left, expect)
            || got.payload.len() != values
        {
            return Err(fault(format!(
                "is not the one expected (step {}, message {}, from rank {}, chunk {} of {} values)",
                got.step,
                got.seq,
                got.from,
                got.chunk,
                got.payload.len()
            )));
        }
        if got.crc() != got.checksum {
            return Err(fault(format!(
                "arrived damaged (its checksum {:08x} does not match its contents, {:08x})",
                got.checksum,
                got.crc()
            )));
        }
        Ok(got)
    }
}

/// A received message, as its header says (its receiver, `to`, is not on the wire), or None
/// when it is shorter than a header.
fn decode(words: &[u32], to: usize) -> Option<Message> {
    let (h, body) = (words.get(..HEADER)?, &words[HEADER..]);
    Some(Message {
        step: h[0] as u64 | (h[1] as u64) << 32,
        seq: h[2],
        from: h[3] as usize,
        to,
        chunk: h[4] as usize,
        payload: body.iter().map(|&w| f32::from_bits(w)).collect(),
        checksum: h[5],
    })
}

/// Sends `out` to rank `to` (unless `lose`: a lost message) while receiving from rank `from`
/// into `into`, waiting for the receive at most `timeout`; returns the words received, or how
/// long it waited. The receive is posted first, so two neighbours never wait on each other.
fn exchange(
    world: &SimpleCommunicator,
    (to, out, lose): (usize, &[u32], bool),
    (from, into): (usize, &mut [u32]),
    timeout: std::time::Duration,
) -> std::result::Result<usize, std::time::Duration> {
    let start = std::time::Instant::now();
    mpi::request::scope(|scope| {
        let mut recv = world
            .process_at_rank(from as i32)
            .immediate_receive_into(scope, into);
        let send = (!lose).then(|| world.process_at_rank(to as i32).immediate_send(scope, out));
        let status = loop {
            match recv.test() {
                Ok(status) => break Some(status),
                Err(r) => recv = r,
            }
            if start.elapsed() > timeout {
                recv.cancel();
                let _ = recv.wait();
                break None;
            }
            std::thread::yield_now();
        };
        if let Some(send) = send {
            send.wait();
        }
        match status {
            Some(s) => Ok(s.count(u32::equivalent_datatype()) as usize),
            None => Err(start.elapsed()),
        }
    })
}

impl AllReduce for MpiAllReduce {
    fn describe(&self) -> String {
        let how = match self.across {
            AcrossRanks::Ring => {
                "ring all-reduce over MPI point-to-point (2×(N−1) checksummed messages a sync)"
            }
            AcrossRanks::Mpi => "MPI_Allreduce",
        };
        format!(
            "{how} across {} ranks{} (rank {} of {})",
            self.ranks,
            if self.local > 1 {
                format!(
                    ", after an in-process ring over {} local replicas",
                    self.local
                )
            } else {
                String::new()
            },
            self.rank,
            self.ranks
        )
    }

    fn world(&self) -> usize {
        self.ranks * self.local
    }

    fn bytes_are(&self) -> &'static str {
        // Under --allreduce mpi, MPI picks its algorithm: what it put on the wires is not
        // known here, only the buffer handed to it (plus the local ring's payload where a
        // rank has several).
        match (self.across, self.local > 1) {
            (AcrossRanks::Ring, _) => "ring payload",
            (AcrossRanks::Mpi, true) => "local ring payload + handed to MPI_Allreduce",
            (AcrossRanks::Mpi, false) => "handed to MPI_Allreduce",
        }
    }

    fn first_replica(&self) -> usize {
        self.rank * self.local
    }

    fn spans_processes(&self) -> bool {
        true
    }

    fn all_reduce(&mut self, step: u64, grads: &mut [&mut [f32]]) -> Result<Vec<Traffic>> {
        // 1. Inside the rank.
        let mut traffic = self.ring.all_reduce(step, grads)?;
        // 2. Across ranks: the local sum (now in every local replica) once.
        let across = match self.across {
            AcrossRanks::Ring => {
                let mut sum = std::mem::take(&mut self.scratch);
                sum.clear();
                sum.extend_from_slice(grads[0]);
                let t = self.ring_across(step, &mut sum);
                self.scratch = sum;
                t?
            }
            AcrossRanks::Mpi => {
                let local_sum = &grads[0];
                self.scratch.resize(local_sum.len(), 0.0);
                self.world.all_reduce_into(
                    &local_sum[..],
                    &mut self.scratch[..],
                    SystemOperation::sum(),
                );
                // Handed to MPI (and received back) by the rank.
                let bytes = 4 * self.scratch.len() as u64;
                Traffic {
                    sent: bytes,
                    received: bytes,
                    messages: 1,
                }
            }
        };
        // 3. Back to every local replica.
        for g in grads.iter_mut() {
            g.copy_from_slice(&self.scratch);
        }
        // Counted once a rank, on replica 0.
        if let Some(t) = traffic.first_mut() {
            *t += across;
        }
        Ok(traffic)
    }

    fn sum_totals(&mut self, t: Totals) -> Result<Totals> {
        let mine = [t.loss_sum, t.correct as f64, t.seen as f64];
        let mut all = [0.0f64; 3];
        self.world
            .all_reduce_into(&mine[..], &mut all[..], SystemOperation::sum());
        Ok(Totals {
            loss_sum: all[0],
            correct: all[1] as u64,
            seen: all[2] as u64,
        })
    }

    fn agree(&mut self, what: &str, hash: u64) -> Result<()> {
        let mut all = vec![0u64; self.ranks];
        self.world.all_gather_into(&hash, &mut all[..]);
        match all.iter().position(|&h| h != all[0]) {
            Some(r) => Err(Error::Replicas(format!(
                "rank {r} holds different weights from rank 0 {what} (weight hashes {:016x} and {:016x}): the ranks have drifted apart",
                all[r], all[0]
            ))),
            None => Ok(()),
        }
    }
}
