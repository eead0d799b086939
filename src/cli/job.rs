//! This process's place in a run: alone, or one rank of an MPI job.

use crate::error::Result;
use std::path::PathBuf;

/// Where rank `rank` leaves its trace events for rank 0.
pub(super) fn rank_part(path: &std::path::Path, rank: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".rank{rank}"));
    PathBuf::from(name)
}

/// This process's place in the run: alone, or a rank of an MPI job.
pub(super) struct Job {
    pub(super) rank: usize,
    pub(super) ranks: usize,
    pub(super) local_rank: usize,
    #[cfg(feature = "mpi")]
    pub(super) mpi: Option<crate::parallel::mpi::MpiJob>,
}

impl Job {
    pub(super) fn start(mpi: bool) -> Result<Job> {
        if !mpi {
            return Ok(Job {
                rank: 0,
                ranks: 1,
                local_rank: 0,
                #[cfg(feature = "mpi")]
                mpi: None,
            });
        }
        #[cfg(feature = "mpi")]
        {
            let job = crate::parallel::mpi::MpiJob::init()?;
            Ok(Job {
                rank: job.rank,
                ranks: job.ranks,
                local_rank: job.local_rank,
                mpi: Some(job),
            })
        }
        #[cfg(not(feature = "mpi"))]
        Err(crate::error::Error::Config(
            "--mpi: this gpu-train was built without MPI; build it with `cargo build --release --features mpi` \
             (needs libopenmpi-dev, openmpi-bin, libclang-dev and clang)"
                .into(),
        ))
    }

    /// The all-reduce joining `local` replicas here to the rest of the job, if this is one:
    /// across ranks by `across`, with `faults` in the ring's messages.
    pub(super) fn all_reduce(
        &self,
        local: usize,
        across: crate::parallel::all_reduce::AcrossRanks,
        faults: &crate::parallel::ring::Faults,
    ) -> Result<Option<Box<dyn crate::parallel::all_reduce::AllReduce>>> {
        #[cfg(feature = "mpi")]
        if let Some(job) = &self.mpi {
            return Ok(Some(Box::new(job.all_reduce(
                local,
                across,
                faults.clone(),
            )?)));
        }
        let _ = (local, across, faults);
        Ok(None)
    }

    /// Checks that every rank of an MPI job agrees on `fields` (nothing to check alone).
    pub(super) fn agree(&self, fields: &[(&'static str, String)]) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let Some(job) = &self.mpi {
            return job.agree(fields);
        }
        let _ = fields;
        Ok(())
    }

    /// The end of this process's run. Alone, the result goes back to `main`. In an MPI job a
    /// rank that failed prints its reason, naming itself, and ends the whole job at once
    /// (MPI_Abort with the error's exit code): returning would leave the other ranks waiting
    /// in a collective, and this one in MPI_Finalize, forever.
    pub(super) fn finish(self, result: Result<()>) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let (Some(job), Err(e)) = (&self.mpi, &result) {
            crate::error::say_error(&format!("rank {} of {}: {e}", self.rank, self.ranks));
            use std::io::Write;
            let _ = std::io::stderr().flush();
            let _ = std::io::stdout().flush();
            job.abort(e.exit_code());
        }
        result
    }

    pub(super) fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if let Some(job) = &self.mpi {
            job.barrier();
        }
    }
}
