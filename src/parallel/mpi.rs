//! Data parallelism across processes and machines through MPI (`mpirun`), the engine every
//! cluster has, with the same [`AllReduce`] seam as the in-process ring.
//!
//! One MPI rank is one process; it may hold several local replicas (`--devices 0,1` inside an
//! MPI job: one per GPU of that machine). A sync is then hierarchical, as the chapter draws it
//! (NVLink inside a server, the network across servers):
//! ```text
//! 1. inside the rank: the in-process ring sums the local replicas' gradients
//! 2. across ranks:    MPI_Allreduce (sum) of that local sum, over shared memory on one
//!                     machine, TCP (or InfiniBand, ...) between machines
//! 3. inside the rank: the job-wide sum is copied to every local replica
//! ```
//! Which algorithm MPI uses for step 2 is its own choice (for this 407 KB buffer Open MPI
//! typically picks a ring or recursive doubling); the bytes counted here are what was handed to
//! MPI, the buffer itself, not what went on each wire.

use super::ring::Ring;
use super::{AllReduce, Traffic};
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
    /// have the same number; checked).
    pub fn all_reduce(&self, local: usize) -> Result<MpiAllReduce> {
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
}

impl AllReduce for MpiAllReduce {
    fn describe(&self) -> String {
        format!(
            "MPI_Allreduce across {} ranks{} (rank {} of {})",
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
        // MPI picks its algorithm: what it put on the wires is not known here, only the
        // buffer handed to it (plus the local ring's payload where a rank has several).
        if self.local > 1 {
            "local ring payload + handed to MPI_Allreduce"
        } else {
            "handed to MPI_Allreduce"
        }
    }

    fn first_replica(&self) -> usize {
        self.rank * self.local
    }

    fn all_reduce(&mut self, step: u64, grads: &mut [&mut [f32]]) -> Result<Vec<Traffic>> {
        // 1. Inside the rank.
        let mut traffic = self.ring.all_reduce(step, grads)?;
        // 2. Across ranks: the local sum (now in every local replica) once.
        let local_sum = &grads[0];
        self.scratch.resize(local_sum.len(), 0.0);
        self.world.all_reduce_into(
            &local_sum[..],
            &mut self.scratch[..],
            SystemOperation::sum(),
        );
        // 3. Back to every local replica.
        for g in grads.iter_mut() {
            g.copy_from_slice(&self.scratch);
        }
        let bytes = 4 * self.scratch.len() as u64;
        if let Some(t) = traffic.first_mut() {
            // Handed to MPI (and received back) by the rank, counted once, on replica 0.
            t.sent += bytes;
            t.received += bytes;
            t.messages += 1;
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
