//! The seam between the training loop and the replicas: the [`AllReduce`] trait, what one call
//! moved ([`Traffic`]), the one-replica identity, the choice of algorithm across MPI ranks, and
//! the [`part`] of a global batch each replica trains on.
//!
//! In data-parallel training (Figure 3-7: each server has its GPU, its model copy and its share
//! of the mini-batches), every replica runs forward and backward on its own examples, and then
//! the replicas exchange gradients so that each holds the SUM over all of them. Each replica
//! divided its δ2 by the global batch (head.wgsl), so the sum is the gradient of the
//! mean loss over the global batch, and every replica applies the same update: the model copies
//! stay identical, bit for bit, because the sum is computed in a fixed order (no atomics) and
//! then copied to everyone.
//!
//! This file imports nothing else from `parallel/`: the ring and MPI implement it, the training
//! loop calls it, and neither has to know the other.

use crate::error::Result;

/// How the ranks of an MPI job sum their gradients (`--allreduce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcrossRanks {
    /// Our ring (reduce-scatter, then all-gather) over MPI point-to-point messages, each
    /// sequenced and checksummed like the in-process ring's: the bytes it counts are the
    /// algorithm's payload, 2(N−1)/N of the gradient a rank a step.
    Ring,
    /// MPI_Allreduce: the library picks its own algorithm; only the bytes handed to it are
    /// known.
    Mpi,
}

/// What one replica's share of one all-reduce moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes this replica sent to its neighbour.
    pub sent: u64,
    /// Bytes it received from its other neighbour.
    pub received: u64,
    /// Messages it sent.
    pub messages: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, o: Traffic) {
        self.sent += o.sent;
        self.received += o.received;
        self.messages += o.messages;
    }
}

/// Sums gradients across replicas. A handful of methods, so an MPI implementation or a
/// fault-injecting wrapper can stand in without the training loop noticing.
pub trait AllReduce {
    /// One line for the start-up log.
    fn describe(&self) -> String;
    /// Replicas in the whole job: the local ones here, all ranks' under MPI.
    fn world(&self) -> usize;
    /// What the bytes in its [`Traffic`] are, for the epoch line: the algorithm's payload
    /// (what a ring sends), or only what was handed to a library that chose its own way.
    fn bytes_are(&self) -> &'static str {
        "ring payload"
    }
    /// The job-wide index of this process's first local replica (0 in one process): which
    /// part of each global batch the local replicas train on.
    fn first_replica(&self) -> usize {
        0
    }
    /// Whether the job reaches past this process (MPI), so the start-up names the all-reduce
    /// even for a job of one rank: the user asked for ranks and sees how many there are.
    fn spans_processes(&self) -> bool {
        false
    }
    /// Sums element-wise: on return, every slice of `grads` (one per local replica, all the
    /// same length) holds the sum over all `world()` replicas, the same bits in each. `step`
    /// numbers the messages. Returns what each local replica sent and received.
    fn all_reduce(&mut self, step: u64, grads: &mut [&mut [f32]]) -> Result<Vec<Traffic>>;
    /// The training totals of the whole job, from this process's (the epoch line reports all
    /// replicas' examples). In one process they are already whole.
    fn sum_totals(&mut self, totals: crate::engine::Totals) -> Result<crate::engine::Totals> {
        Ok(totals)
    }
    /// Checks that every process holds weights with this hash (`what` says when, for the
    /// message). In one process there is nothing to compare with.
    fn agree(&mut self, _what: &str, _hash: u64) -> Result<()> {
        Ok(())
    }
}

/// One replica: the sum of one gradient is itself, and nothing moves.
pub struct Identity;

impl AllReduce for Identity {
    fn describe(&self) -> String {
        "none (one replica)".into()
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce(&mut self, _step: u64, grads: &mut [&mut [f32]]) -> Result<Vec<Traffic>> {
        Ok(vec![Traffic::default(); grads.len()])
    }
}

/// The part of a global batch of `len` examples that replica `r` of `world` trains on: equal
/// parts when `len` is a multiple of `world` (every full batch), else parts that differ by at
/// most one example (the last batch of an epoch). A part may be empty. The ring cuts a
/// gradient into its chunks the same way.
pub fn part(len: usize, world: usize, r: usize) -> std::ops::Range<usize> {
    (r * len / world)..((r + 1) * len / world)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_batch_in_order() {
        for (len, world) in [(128, 2), (16, 3), (2, 4), (0, 2), (64, 1)] {
            let mut next = 0;
            for r in 0..world {
                let p = part(len, world, r);
                assert_eq!(p.start, next);
                assert!(p.len() == len / world || p.len() == len / world + 1);
                next = p.end;
            }
            assert_eq!(next, len);
        }
    }
}
