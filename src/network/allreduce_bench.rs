//! `gpu-train allreduce-bench`: nccl-tests' numbers for the ring. The in-process ring over 2,
//! 4, ... replicas, or (`--mpi`, under mpirun) our ring over MPI point-to-point messages beside
//! MPI_Allreduce across the ranks, each message size timed and reported as algbw and busbw.
//! `--json` writes the rows ([`BenchRow`]) that `network --project --from` fits α and β to and
//! the lab's `--calibration` fits α and γ to.

use super::inputs::BenchRow;
use crate::error::{Error, Result};
use crate::parallel::all_reduce::AllReduce;
use crate::parallel::ring::Ring;
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct AllreduceBenchArgs {
    /// Replica counts to run (in-process ring).
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    pub replicas: Vec<usize>,
    /// Largest message in bytes (from 8 B, doubling).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_bytes: usize,
    /// Write the rows as JSON (for `gpu-train network --project --from`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Under mpirun: MPI_Allreduce across the ranks instead (one buffer a rank; needs a build
    /// with --features mpi); rank 0 prints.
    #[arg(long)]
    pub mpi: bool,
}

/// --max-bytes within what a sweep needs, and the buffers of `buffers` replicas (or ranks,
/// `what`) of the largest message well inside this machine's memory.
fn check_sizes(a: &AllreduceBenchArgs, buffers: usize, what: &str) -> Result<()> {
    if !(8..=(1usize << 30)).contains(&a.max_bytes) {
        return Err(Error::Config(format!(
            "--max-bytes {}: from 8 to 1 GiB (1073741824)",
            a.max_bytes
        )));
    }
    let need = buffers as u64 * a.max_bytes as u64;
    if need > 4 << 30 {
        return Err(Error::Config(format!(
            "--max-bytes {} × {what} {buffers}: {:.1} GB of buffers; at most 4 GB",
            a.max_bytes,
            need as f64 / 1e9
        )));
    }
    Ok(())
}


/// Times the all-reduce of `bytes` of f32 across `grads` (one buffer per replica). `fixed`:
/// exactly that many runs (every MPI rank must make the same calls), else at least 5 and
/// about 0.2 s.
fn time_one(
    ar: &mut dyn AllReduce,
    grads: &mut [Vec<f32>],
    fixed: Option<usize>,
) -> Result<(f64, u64)> {
    let mut run = |ar: &mut dyn AllReduce| -> Result<u64> {
        let mut views: Vec<&mut [f32]> = grads.iter_mut().map(|g| g.as_mut_slice()).collect();
        Ok(ar.all_reduce(0, &mut views)?[0].sent)
    };
    run(ar)?; // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    let mut sent = 0;
    let more = |n: usize| match fixed {
        Some(f) => n < f,
        None => n < 5 || (start.elapsed() < Duration::from_millis(200) && n < 1000),
    };
    while more(times.len()) {
        let t = Instant::now();
        sent = run(ar)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], sent))
}

pub fn run_allreduce_bench(a: &AllreduceBenchArgs) -> Result<()> {
    if a.mpi {
        return mpi_bench(a);
    }
    if a.replicas.iter().any(|&n| !(2..=64).contains(&n)) {
        return Err(Error::Config("--replicas: each from 2 to 64".into()));
    }
    check_sizes(
        a,
        a.replicas.iter().max().copied().unwrap_or(2),
        "--replicas",
    )?;
    if let Some(json) = &a.json {
        crate::files::check_paths(&[], &[crate::files::Output::File("--json", json)])?;
    }
    println!("# in-process ring all-reduce, f32 sum; time = median; algbw = size/time; busbw = algbw × 2(N−1)/N (nccl-tests' PERFORMANCE.md)");
    println!(
        "{:>4} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "N", "size (B)", "count", "time (µs)", "algbw GB/s", "busbw GB/s"
    );
    let mut rows = Vec::new();
    for &n in &a.replicas {
        let mut bytes = 8usize;
        while bytes <= a.max_bytes {
            let count = bytes / 4;
            let mut grads: Vec<Vec<f32>> =
                (0..n).map(|r| vec![r as f32 * 0.5 + 1.0; count]).collect();
            let mut ring = Ring::new(n);
            let (t, sent) = time_one(&mut ring, &mut grads, None)?;
            let algbw = bytes as f64 / t / 1e9;
            let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
            println!(
                "{n:>4} {bytes:>12} {count:>12} {:>12.2} {algbw:>12.3} {busbw:>12.3}",
                t * 1e6
            );
            rows.push(BenchRow {
                replicas: n,
                bytes,
                bytes_on_wire: sent,
                seconds: t,
                algbw_gbs: algbw,
                busbw_gbs: busbw,
                algorithm: "ring".into(),
            });
            bytes *= 2;
        }
    }
    if let Some(path) = &a.json {
        crate::files::write_file(
            path,
            serde_json::to_string_pretty(&rows)
                .expect("rows")
                .as_bytes(),
            "the benchmark's JSON",
            "an earlier file of that name is untouched",
        )?;
    }
    Ok(())
}


/// `allreduce-bench --mpi`: the same sweep across the ranks of the job, with our ring over MPI
/// point-to-point messages and with MPI_Allreduce, side by side.
fn mpi_bench(a: &AllreduceBenchArgs) -> Result<()> {
    #[cfg(feature = "mpi")]
    {
        use crate::parallel::all_reduce::AcrossRanks;
        let job = crate::parallel::mpi::MpiJob::init()?;
        let n = job.ranks;
        // Checked as without --mpi, then compared across the ranks (a rank with another
        // --max-bytes would wait in a size the others never reach): a rank that refuses ends
        // the whole job, as a training rank does.
        let checked = check_sizes(a, n, "ranks").and_then(|_| {
            job.agree(&[
                ("--max-bytes", a.max_bytes.to_string()),
                ("--replicas", format!("{:?}", a.replicas)),
                ("--json (given or not)", a.json.is_some().to_string()),
            ])
        });
        if let Err(e) = checked {
            crate::error::say_error(&format!("rank {} of {n}: {e}", job.rank));
            job.abort(e.exit_code());
        }
        if job.rank == 0 {
            println!("# across {n} ranks, f32 sum; time = median of 10; algbw = size/time; busbw = algbw × 2(N−1)/N");
            println!("# ring: our ring over MPI point-to-point (bytes sent: its payload); mpi: MPI_Allreduce (bytes: handed to it)");
            println!(
                "{:>4} {:>5} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14}",
                "N",
                "algo",
                "size (B)",
                "count",
                "time (µs)",
                "algbw GB/s",
                "busbw GB/s",
                "sent/rank (B)"
            );
        }
        let mut rows = Vec::new();
        let faults = crate::parallel::ring::Faults {
            timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let mut bytes = 8usize;
        while bytes <= a.max_bytes {
            for across in [AcrossRanks::Ring, AcrossRanks::Mpi] {
                let mut ar = job.all_reduce(1, across, faults.clone())?;
                let mut grads = vec![vec![1.0f32; bytes / 4]];
                let (t, sent) = time_one(&mut ar, &mut grads, Some(10))?;
                let algbw = bytes as f64 / t / 1e9;
                let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
                let algo = match across {
                    AcrossRanks::Ring => "ring",
                    AcrossRanks::Mpi => "mpi",
                };
                if job.rank == 0 {
                    println!(
                        "{n:>4} {algo:>5} {bytes:>12} {:>12} {:>12.2} {algbw:>12.3} {busbw:>12.3} {sent:>14}",
                        bytes / 4,
                        t * 1e6
                    );
                }
                rows.push(BenchRow {
                    replicas: n,
                    bytes,
                    bytes_on_wire: sent,
                    seconds: t,
                    algbw_gbs: algbw,
                    busbw_gbs: busbw,
                    algorithm: algo.into(),
                });
            }
            bytes *= 2;
        }
        if let (Some(path), 0) = (&a.json, job.rank) {
            crate::files::write_file(
                path,
                serde_json::to_string_pretty(&rows)
                    .expect("rows")
                    .as_bytes(),
                "the benchmark's JSON",
                "an earlier file of that name is untouched",
            )?;
        }
        Ok(())
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = a;
        Err(Error::Config(
            "allreduce-bench --mpi: this gpu-train was built without MPI (cargo build --release --features mpi)".into(),
        ))
    }
}
