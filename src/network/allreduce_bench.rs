//! `gpu-train allreduce-bench`: NVIDIA nccl-tests' `all_reduce_perf` for our ring, with its
//! flags (-b -e -f -n -w -c), its header, its columns (size, count, type, redop, root, then
//! time, algbw, busbw and #wrong out-of-place and in-place) and its closing lines (`# Out of
//! bounds values`, `# Avg bus bandwidth`). What runs is ours: in-process replicas over the host
//! ring (`-g 2,4`), or (`--mpi`, under mpirun) the ranks of the job, with our ring over MPI
//! point-to-point messages and then MPI_Allreduce, not NCCL over NVLink.
//!
//! `--json` writes the rows ([`BenchRow`], the in-place numbers) that `network --project
//! --from` fits α and β to and the lab's `--calibration` fits α and γ to.

use super::inputs::BenchRow;
use crate::error::{Error, Result};
use crate::parallel::all_reduce::AllReduce;
use crate::parallel::ring::Ring;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct AllreduceBenchArgs {
    /// Smallest message (nccl-tests' -b): bytes, or with K, M or G (binary: 1K = 1024).
    #[arg(short = 'b', long = "minbytes", value_parser = parse_size, default_value = "8")]
    pub minbytes: usize,
    /// Largest message (-e), as -b; --max-bytes is the old name.
    #[arg(short = 'e', long = "maxbytes", alias = "max-bytes", value_parser = parse_size, default_value = "64M")]
    pub maxbytes: usize,
    /// Each message this many times the one before (-f).
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    pub stepfactor: usize,
    /// Timed all-reduces a size and direction (-n); the time is their mean.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    pub iters: usize,
    /// Untimed all-reduces before them (-w).
    #[arg(short = 'w', long = "warmup_iters", alias = "warmup-iters", default_value_t = 5)]
    pub warmup_iters: usize,
    /// 1: after the timed ones, one more all-reduce a size and direction, every element
    /// compared with the exact sum (the #wrong column); 0: not checked (N/A).
    #[arg(short = 'c', long = "check", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub check: u8,
    /// In-process replicas, one table each (in one process, like nccl-tests' -g).
    #[arg(short = 'g', long, alias = "ngpus", value_delimiter = ',', default_value = "2,4")]
    pub replicas: Vec<usize>,
    /// Write the rows as JSON (for `gpu-train network --project --from`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Under mpirun: across the ranks instead (one buffer a rank; needs a build with
    /// --features mpi): our ring over MPI point-to-point, then MPI_Allreduce; rank 0 prints.
    #[arg(long)]
    pub mpi: bool,
}

/// The smallest message: one f32.
const MIN_BYTES: usize = 4;
/// The largest message: nccl-tests' 1G.
const MAX_BYTES: usize = 1 << 30;
/// At most this many bytes of buffers (send and receive, every replica or rank on this machine).
const MAX_BUFFERS: u64 = 4 << 30;

/// A size as nccl-tests' -b and -e take it: `8`, `64K`, `1M`, `1G` (K, M, G binary, either case).
fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let (digits, scale) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1usize << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{s:?}: bytes, or a number with K, M or G (8, 64K, 1M, 1G)"))
}

/// The message sizes of the sweep: from -b, times -f, up to -e, each a whole number of f32
/// (as nccl-tests rounds a size down to its count of elements). Checks the flags on the way.
fn sizes(a: &AllreduceBenchArgs) -> Result<Vec<usize>> {
    for (flag, v) in [("-b/--minbytes", a.minbytes), ("-e/--maxbytes", a.maxbytes)] {
        if !(MIN_BYTES..=MAX_BYTES).contains(&v) {
            return Err(Error::Config(format!(
                "{flag} {v}: from {MIN_BYTES} (one f32) to 1G ({MAX_BYTES}) bytes"
            )));
        }
    }
    if a.minbytes > a.maxbytes {
        return Err(Error::Config(format!("-b/--minbytes {} is above -e/--maxbytes {}", a.minbytes, a.maxbytes)));
    }
    match (a.stepfactor, a.iters) {
        (f, _) if f < 2 => return Err(Error::Config(format!("-f/--stepfactor {f}: at least 2 (each size a multiple of the last)"))),
        (_, 0) => return Err(Error::Config("-n/--iters 0: at least one timed all-reduce".into())),
        _ => {}
    }
    let mut all = Vec::new();
    let mut bytes = a.minbytes;
    while bytes <= a.maxbytes {
        all.push(bytes / 4 * 4);
        bytes = bytes.saturating_mul(a.stepfactor);
    }
    Ok(all)
}

/// The buffers of `buffers` replicas (or ranks, `what`) of the largest message, send and
/// receive, well inside this machine's memory.
fn check_memory(a: &AllreduceBenchArgs, buffers: usize, what: &str) -> Result<()> {
    let need = 2 * buffers as u64 * a.maxbytes as u64;
    if need > MAX_BUFFERS {
        return Err(Error::Config(format!(
            "-e/--maxbytes {} × {what} {buffers} × 2 (send and receive): {:.1} GB of buffers; at most {:.1} GB",
            a.maxbytes,
            need as f64 / 1e9,
            MAX_BUFFERS as f64 / 1e9
        )));
    }
    Ok(())
}

/// How every size is run: -w untimed, -n timed, then (-c 1) one checked.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: usize,
    iters: usize,
    check: bool,
}

/// nccl-tests' busbw factor for all-reduce, 2(N−1)/N: the share of the message each replica's
/// link carries in a ring (reduce-scatter, then all-gather), so busbw compares across N.
fn bus_factor(world: usize) -> f64 {
    2.0 * (world as f64 - 1.0) / world as f64
}

/// The value replica `r` holds at element `i` before an all-reduce: a small integer (−8 to 8)
/// from both indices. The sum over up to 64 replicas is then an integer below 2^10, which
/// every order of adding reaches exactly in f32; a chunk added twice, missed or put in the
/// wrong place changes it.
fn pattern(r: usize, i: usize) -> i64 {
    ((i * 7 + r * 13 + 1) % 17) as i64 - 8
}

/// The exact sum over `world` replicas at each of `count` elements, added in integers: what
/// the all-reduce should leave in every buffer, worked out without it.
fn expected(world: usize, count: usize) -> Vec<f32> {
    (0..count)
        .map(|i| (0..world).map(|r| pattern(r, i)).sum::<i64>() as f32)
        .collect()
}

/// The local replicas' buffers for one size: `send` holds each replica's pattern and is never
/// summed into; `recv` receives the sum.
struct Buffers {
    send: Vec<Vec<f32>>,
    recv: Vec<Vec<f32>>,
}

impl Buffers {
    /// `local` replicas of `count` elements, the first of them replica `first` of the job.
    fn new(count: usize, local: usize, first: usize) -> Self {
        let send: Vec<Vec<f32>> = (first..first + local)
            .map(|r| (0..count).map(|i| pattern(r, i) as f32).collect())
            .collect();
        Buffers { recv: send.clone(), send }
    }

    /// One all-reduce, in place or out of place. Our [`AllReduce`] sums in place (training
    /// needs nothing else), so out-of-place copies each send buffer into its receive buffer
    /// and sums that: its time is the in-place time plus a copy. Returns what replica 0 sent.
    fn all_reduce(&mut self, ar: &mut dyn AllReduce, step: &mut u64, in_place: bool) -> Result<u64> {
        if !in_place {
            for (s, r) in self.send.iter().zip(self.recv.iter_mut()) {
                r.copy_from_slice(s);
            }
        }
        let mut views: Vec<&mut [f32]> = self.recv.iter_mut().map(|g| g.as_mut_slice()).collect();
        let traffic = ar.all_reduce(*step, &mut views)?;
        *step += 1;
        Ok(traffic[0].sent)
    }

    /// Elements of the receive buffers that differ from the exact sum over `world` replicas.
    fn wrong(&self, world: usize) -> u64 {
        let want = expected(world, self.send[0].len());
        self.recv
            .iter()
            .map(|g| g.iter().zip(&want).filter(|(x, w)| x != w).count() as u64)
            .sum()
    }
}

/// What the ranks do together for each size: nothing in one process; under MPI a barrier
/// before the timed all-reduces (so they start together) and the sum of the ranks' #wrong.
struct Together<'a> {
    barrier: &'a dyn Fn(),
    sum: &'a dyn Fn(u64) -> u64,
}

/// One process: nothing to wait for, and its own #wrong is the whole count.
const ALONE: Together<'static> = Together { barrier: &|| {}, sum: &|w| w };

/// One direction of one size: nccl-tests' time, algbw, busbw and #wrong, and what replica 0
/// sent in one all-reduce.
#[derive(Debug, Clone, Copy)]
struct Measured {
    seconds: f64,
    algbw: f64,
    busbw: f64,
    wrong: Option<u64>,
    sent: u64,
}

/// Runs one direction of one size as nccl-tests does: the buffers filled, -w untimed
/// all-reduces, -n timed back to back (time = their mean), then with -c 1 the buffers filled
/// again, one more all-reduce and every element of every receive buffer checked.
fn measure(
    ar: &mut dyn AllReduce,
    bufs: &mut Buffers,
    in_place: bool,
    plan: Plan,
    (step, together): (&mut u64, &Together),
) -> Result<Measured> {
    let refill = |b: &mut Buffers| b.recv.clone_from(&b.send);
    refill(bufs);
    for _ in 0..plan.warmup {
        bufs.all_reduce(ar, step, in_place)?;
    }
    (together.barrier)();
    let start = Instant::now();
    let mut sent = 0;
    for _ in 0..plan.iters {
        sent = bufs.all_reduce(ar, step, in_place)?;
    }
    let seconds = start.elapsed().as_secs_f64() / plan.iters as f64;
    let mut wrong = None;
    if plan.check {
        refill(bufs);
        bufs.all_reduce(ar, step, in_place)?;
        wrong = Some((together.sum)(bufs.wrong(ar.world())));
    }
    let algbw = 4.0 * bufs.send[0].len() as f64 / seconds / 1e9;
    Ok(Measured { seconds, algbw, busbw: algbw * bus_factor(ar.world()), wrong, sent })
}

/// The sweep's results so far: the JSON rows, every busbw printed (out-of-place and in-place:
/// nccl-tests averages both) and the elements found wrong.
#[derive(Default)]
struct Summary {
    rows: Vec<BenchRow>,
    busbw: Vec<f64>,
    wrong: u64,
}

/// One table: every size of the sweep on `ar` with `local` buffers here (the first replica
/// `first` of the job), printed by `speak` (rank 0), added to `sum`.
fn table(
    ar: &mut dyn AllReduce,
    sizes: &[usize],
    plan: Plan,
    (local, first, algorithm): (usize, usize, &str),
    (together, speak): (&Together, bool),
    sum: &mut Summary,
) -> Result<()> {
    let mut step = 0;
    for &bytes in sizes {
        let mut bufs = Buffers::new(bytes / 4, local, first);
        let oop = measure(ar, &mut bufs, false, plan, (&mut step, together))?;
        let ip = measure(ar, &mut bufs, true, plan, (&mut step, together))?;
        if speak {
            println!("{}", row(bytes, &oop, &ip));
        }
        sum.busbw.extend([oop.busbw, ip.busbw]);
        sum.wrong += oop.wrong.unwrap_or(0) + ip.wrong.unwrap_or(0);
        sum.rows.push(BenchRow {
            replicas: ar.world(),
            bytes,
            bytes_on_wire: ip.sent,
            seconds: ip.seconds,
            algbw_gbs: ip.algbw,
            busbw_gbs: ip.busbw,
            algorithm: algorithm.into(),
        });
    }
    Ok(())
}

/// The start of the output: what runs, and the flags as nccl-tests' header names them.
fn print_header(a: &AllreduceBenchArgs, what: &str, world: &str) {
    println!("# gpu-train allreduce-bench: {what}, f32 sum");
    println!(
        "# {world} minBytes {} maxBytes {} step: {}(factor) warmup iters: {} iters: {} validation: {}",
        a.minbytes, a.maxbytes, a.stepfactor, a.warmup_iters, a.iters, a.check
    );
    println!("# time: the mean of -n all-reduces (µs); algbw = size/time; busbw = algbw × 2(N−1)/N (nccl-tests' PERFORMANCE.md)");
    println!("# out-of-place: each send buffer copied into its receive buffer, then summed there (the copy is timed); in-place: summed where it is");
    println!("# #wrong: elements that differ from the exact sum (each replica holds small integers from its index and the element's, summed here in integers)");
    println!("# sent: what replica 0 (rank 0) sent in one all-reduce, counted message by message (a column nccl-tests has not)");
}

/// A table's title (`# N = 2 ...`, the world the busbw factor uses) and column heads, laid
/// out as nccl-tests lays its own.
fn print_columns(world: usize, title: &str) {
    println!("#\n# N = {world} {title}");
    println!("# {:>50}{:^33}{:^33}", "", "out-of-place", "in-place");
    let heads = |h: [&str; 4]| format!("  {:>7}  {:>6}  {:>6}  {:>6}", h[0], h[1], h[2], h[3]);
    let (names, units) = (heads(["time", "algbw", "busbw", "#wrong"]), heads(["(us)", "(GB/s)", "(GB/s)", ""]));
    println!("# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}{names}{names}  {:>12}", "size", "count", "type", "redop", "root", "sent");
    println!("# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}{units}{units}  {:>12}", "(B)", "(elements)", "", "", "", "(B)");
}

/// One size: nccl-tests' row (root −1: all-reduce has none), then what replica 0 sent.
fn row(bytes: usize, oop: &Measured, ip: &Measured) -> String {
    let part = |m: &Measured| {
        let wrong = m.wrong.map_or("N/A".to_string(), |w| w.to_string());
        format!("  {:>7}  {:>6.2}  {:>6.2}  {wrong:>6}", micros(m.seconds), m.algbw, m.busbw)
    };
    format!(
        "{bytes:>12}  {:>12}  {:>8}  {:>6}  {:>6}{}{}  {:>12}",
        bytes / 4, "float", "sum", -1, part(oop), part(ip), ip.sent
    )
}

/// A time in µs with nccl-tests' precision: 2 decimals below 100, 1 below 10,000, then none.
fn micros(seconds: f64) -> String {
    let us = seconds * 1e6;
    match us {
        u if u >= 10_000.0 => format!("{u:.0}"),
        u if u >= 100.0 => format!("{u:.1}"),
        u => format!("{u:.2}"),
    }
}

/// nccl-tests' closing lines; the sweep fails (exit 1) if any element was wrong.
fn close(sum: &Summary, plan: Plan, speak: bool) -> Result<()> {
    let avg = sum.busbw.iter().sum::<f64>() / sum.busbw.len().max(1) as f64;
    if speak {
        match (plan.check, sum.wrong) {
            (false, _) => println!("# Out of bounds values : N/A (-c 0: not checked)"),
            (true, 0) => println!("# Out of bounds values : 0 OK"),
            (true, w) => println!("# Out of bounds values : {w} FAILED"),
        }
        println!("# Avg bus bandwidth    : {avg:.4}");
        println!("#");
    }
    if sum.wrong > 0 {
        return Err(Error::Replicas(format!(
            "allreduce-bench: {} element(s) differ from the exact sum (the #wrong column)",
            sum.wrong
        )));
    }
    Ok(())
}

fn write_json(path: &std::path::Path, rows: &[BenchRow]) -> Result<()> {
    let text = serde_json::to_string_pretty(rows).expect("rows");
    crate::files::write_file(path, text.as_bytes(), "the benchmark's JSON", "an earlier file of that name is untouched")
}

pub fn run_allreduce_bench(a: &AllreduceBenchArgs) -> Result<()> {
    if a.mpi {
        return mpi_bench(a);
    }
    if a.replicas.iter().any(|&n| !(2..=64).contains(&n)) {
        return Err(Error::Config("-g/--replicas: each from 2 to 64".into()));
    }
    let sizes = sizes(a)?;
    check_memory(a, a.replicas.iter().max().copied().unwrap_or(2), "-g/--replicas")?;
    if let Some(json) = &a.json {
        crate::files::check_paths(&[], &[crate::files::Output::File("--json", json)])?;
    }
    let plan = Plan { warmup: a.warmup_iters, iters: a.iters, check: a.check == 1 };
    let list: Vec<String> = a.replicas.iter().map(|n| n.to_string()).collect();
    print_header(a, "in-process replicas over the host ring (one thread: memory copies, no wire)", &format!("replicas {}", list.join(",")));
    let mut sum = Summary::default();
    for &n in &a.replicas {
        print_columns(n, "replicas, in-process ring");
        let mut ring = Ring::new(n);
        table(&mut ring, &sizes, plan, (n, 0, "ring"), (&ALONE, true), &mut sum)?;
    }
    close(&sum, plan, true)?;
    match &a.json {
        Some(path) => write_json(path, &sum.rows),
        None => Ok(()),
    }
}

/// `allreduce-bench --mpi`: the same sweep across the ranks of the job, one buffer a rank:
/// a table of our ring over MPI point-to-point messages, then one of MPI_Allreduce.
fn mpi_bench(a: &AllreduceBenchArgs) -> Result<()> {
    #[cfg(feature = "mpi")]
    {
        use crate::parallel::all_reduce::AcrossRanks;
        let job = crate::parallel::mpi::MpiJob::init()?;
        let n = job.ranks;
        // Checked as without --mpi, then compared across the ranks (a rank with another
        // -e would wait in a size the others never reach): a rank that refuses ends the
        // whole job, as a training rank does.
        let flags = [
            ("-b/--minbytes", a.minbytes.to_string()), ("-e/--maxbytes", a.maxbytes.to_string()),
            ("-f/--stepfactor", a.stepfactor.to_string()), ("-n/--iters", a.iters.to_string()),
            ("-w/--warmup_iters", a.warmup_iters.to_string()), ("-c/--check", a.check.to_string()),
            ("-g/--replicas", format!("{:?}", a.replicas)), ("--json (given or not)", a.json.is_some().to_string()),
        ];
        let checked = sizes(a).and_then(|s| check_memory(a, n, "ranks").and_then(|_| job.agree(&flags)).map(|_| s));
        let sizes = match checked {
            Ok(s) => s,
            Err(e) => {
                crate::error::say_error(&format!("rank {} of {n}: {e}", job.rank));
                job.abort(e.exit_code());
            }
        };
        let plan = Plan { warmup: a.warmup_iters, iters: a.iters, check: a.check == 1 };
        let speak = job.rank == 0;
        if speak {
            print_header(a, "MPI ranks, one buffer each (shared memory on one machine, TCP between machines)", &format!("ranks {n}"));
        }
        let barrier = || job.barrier();
        let add = |w: u64| job.sum(w);
        let together = Together { barrier: &barrier, sum: &add };
        let timeout = std::time::Duration::from_secs(10);
        let faults = crate::parallel::ring::Faults { timeout, ..Default::default() };
        let mut sum = Summary::default();
        for (across, algo, title) in [
            (AcrossRanks::Ring, "ring", "ranks, ring: our ring over MPI point-to-point (sent: its payload)"),
            (AcrossRanks::Mpi, "mpi", "ranks, mpi: MPI_Allreduce (sent: the bytes handed to it)"),
        ] {
            if speak {
                print_columns(n, title);
            }
            let mut ar = job.all_reduce(1, across, faults.clone())?;
            table(&mut ar, &sizes, plan, (1, job.rank, algo), (&together, speak), &mut sum)?;
        }
        close(&sum, plan, speak)?;
        match (&a.json, speak) {
            (Some(path), true) => write_json(path, &sum.rows),
            _ => Ok(()),
        }
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = a;
        Err(Error::Config(
            "allreduce-bench --mpi: this gpu-train was built without MPI (cargo build --release --features mpi)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::all_reduce::Traffic;

    #[test]
    fn sizes_are_read_as_nccl_tests_reads_them() {
        for (s, want) in [("8", 8), ("64K", 65536), ("1M", 1 << 20), ("1g", 1 << 30)] {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for s in ["", "M", "1T", "-8", "1.5M"] {
            assert!(parse_size(s).is_err(), "{s}");
        }
    }

    /// A ring that forgets the last replica: what the check is there to catch.
    struct ForgetsOne(Ring);

    impl AllReduce for ForgetsOne {
        fn describe(&self) -> String {
            "forgets the last replica".into()
        }
        fn world(&self) -> usize {
            self.0.world()
        }
        fn all_reduce(&mut self, step: u64, grads: &mut [&mut [f32]]) -> Result<Vec<Traffic>> {
            grads.last_mut().unwrap().fill(0.0);
            self.0.all_reduce(step, grads)
        }
    }

    #[test]
    fn the_check_counts_elements_off_the_exact_sum() {
        let plan = Plan { warmup: 1, iters: 2, check: true };
        let together = ALONE;
        // 1,001 elements: not a multiple of the ring's chunks.
        for in_place in [false, true] {
            let mut bufs = Buffers::new(1001, 3, 0);
            let good = measure(&mut Ring::new(3), &mut bufs, in_place, plan, (&mut 0, &together)).unwrap();
            assert_eq!(good.wrong, Some(0));
            let bad = measure(&mut ForgetsOne(Ring::new(3)), &mut bufs, in_place, plan, (&mut 0, &together)).unwrap();
            // Every element where the forgotten replica held anything but 0, in all 3 buffers.
            let off = (0..1001).filter(|&i| pattern(2, i) != 0).count() as u64;
            assert_eq!(bad.wrong, Some(3 * off));
            assert!((good.busbw - good.algbw * 4.0 / 3.0).abs() < 1e-12 * good.busbw);
        }
    }
}
