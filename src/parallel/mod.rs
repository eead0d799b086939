//! Joining replicas: the all-reduce that turns every replica's gradient into their sum.
//!
//! * [`all_reduce`]: the seam, the [`AllReduce`](all_reduce::AllReduce) trait the training
//!   loop hands one flat gradient per local replica, without knowing how the sum is made; the
//!   identity for one replica alone; the part of a batch each replica trains on.
//! * [`ring`]: the in-process ring, moving chunks between replicas exactly as NCCL's and MPI's
//!   ring algorithm does between GPUs and machines, counting every byte it sends; the faults
//!   it can inject.
//! * `mpi` (`--features mpi`): the same ring across the ranks of an MPI job, or
//!   MPI_Allreduce.
//! * [`duration`]: a duration flag's value (`--fault slow-link=5ms`, `network --latency`).
//!
//! Every file imports what it uses from the file that defines it; this one only declares them.

pub mod all_reduce;
pub mod duration;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod ring;
