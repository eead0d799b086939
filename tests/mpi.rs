//! Data parallelism over MPI (`--features mpi`): `mpirun -np N gpu-train --mpi ...` gives the
//! same weights as N in-process replicas (bit for bit with 2, within float rounding with 3 and
//! 4), resumes exactly, and a rank killed with SIGKILL stops the whole job with its snapshots
//! intact, from which a resume ends where an uninterrupted run ends.
//!
//! mpirun runs as root here (CI), which Open MPI allows only when told to, and with more ranks
//! than this 2-core machine has cores (--oversubscribe).
#![cfg(feature = "mpi")]

mod common;
use common::{gpu_train, wait};
use gpu_train::checkpoint;
use gpu_train::snapshots::SnapshotDir;
use gpu_train::model::Model;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gpu-train");

fn mpirun_cmd(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "-np", &np.to_string(), BIN, "--mpi"])
        .args(args);
    c
}

fn mpirun(np: usize, args: &[&str]) -> Output {
    let child = mpirun_cmd(np, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun (apt-get install openmpi-bin)");
    let out = wait(child, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "mpirun -np {np} {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn latest(dir: &Path) -> Model {
    let snaps = SnapshotDir::open(dir, 100).unwrap();
    checkpoint::load(&snaps.latest().unwrap().unwrap())
        .unwrap()
        .0
}

fn assert_close(what: &str, a: &Model, b: &Model) {
    for ((name, _, x), (_, _, y)) in a.tensors().iter().zip(b.tensors().iter()) {
        common::assert_close(&format!("{what}: {name}"), x, y, 2e-6, 1e-4);
    }
}

#[test]
fn ranks_train_like_in_process_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let common = [
        "--cpu",
        "--threads",
        "1",
        "--limit",
        "1000",
        "--epochs",
        "2",
    ];
    for (np, batch) in [(2usize, "32"), (3, "21"), (4, "16")] {
        let n = np.to_string();
        let local = d(&format!("local{np}"));
        let mut b = common.to_vec();
        b.extend([
            "--replicas",
            &n,
            "--batch-size",
            batch,
            "--snapshot-dir",
            &local,
        ]);
        let (code, _, err) = gpu_train(&b);
        assert_eq!(code, 0, "{err}");
        let m_local = latest(Path::new(&local));
        for algo in ["ring", "mpi"] {
            let ranks = d(&format!("ranks{np}-{algo}"));
            let mut a = common.to_vec();
            a.extend([
                "--batch-size",
                batch,
                "--snapshot-dir",
                &ranks,
                "--allreduce",
                algo,
            ]);
            let out = mpirun(np, &a);
            let text = String::from_utf8_lossy(&out.stdout);
            let m_ranks = latest(Path::new(&ranks));
            if algo == "ring" {
                // Our ring across ranks makes the in-process ring's chunks, order and
                // additions: the same bits, whatever N. Its payload is what it counts.
                assert!(
                    text.contains(&format!("ring all-reduce over MPI point-to-point (2×(N−1) checksummed messages a sync) across {np} ranks")),
                    "{text}"
                );
                assert!(text.contains("ring payload"), "{text}");
                assert!(
                    m_ranks == m_local,
                    "{np} ranks (ring) differ from {np} in-process replicas (max {})",
                    m_ranks.max_abs_diff(&m_local)
                );
            } else {
                assert!(
                    text.contains(&format!("MPI_Allreduce across {np} ranks")),
                    "{text}"
                );
                assert!(text.contains("handed to MPI_Allreduce"), "{text}");
                if np == 2 {
                    // a + b = b + a: with two, MPI's sum and the ring's are the same bits.
                    assert!(m_ranks == m_local, "2 ranks (MPI_Allreduce) differ");
                } else {
                    // With more, MPI adds in its own order: the same tolerance as N replicas
                    // against one device with N× the batch (tests/parallel.rs).
                    assert_close(&format!("{np} ranks vs {np} replicas"), &m_ranks, &m_local);
                }
            }
        }
    }
}

/// The ring across 4 ranks reports its payload, 2(N−1)/N of the 407,080-byte gradient a step a
/// rank: 610,620 B (before, under --mpi the bytes handed to MPI_Allreduce were reported under
/// the ring's label); a damaged or lost message between ranks stops the job with its reason.
#[test]
fn the_ring_across_ranks_counts_its_payload_and_catches_bad_messages() {
    let base = [
        "--cpu",
        "--threads",
        "1",
        "--limit",
        "1280",
        "--epochs",
        "1",
        "--batch-size",
        "64",
    ];
    let out = mpirun(4, &base);
    let text = String::from_utf8_lossy(&out.stdout);
    // 1,280 images, global batch 4 × 64: 5 steps.
    // The epoch's line and the detail lines under it (indented).
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("epoch")).expect("an epoch line");
    let line = lines[at..]
        .iter()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("  "))
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join(" ");
    let mb = 5.0 * 610_620.0 / 1e6;
    assert!(
        line.contains(&format!("ring payload {mb:.1} MB/replica")),
        "{line}"
    );
    for (fault, says) in [
        ("corrupt-message@2:1", "arrived damaged"),
        ("lose-message@2:0", "never arrived"),
    ] {
        let mut a = base.to_vec();
        a.extend(["--fault", fault]);
        let child = mpirun_cmd(2, &a)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait(child, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{fault}: {err}");
        assert!(
            err.contains("global step 2") && err.contains(says),
            "{fault}: {err}"
        );
    }
}

#[test]
fn gpu_ranks_match_in_process_gpu_replicas_bit_for_bit() {
    if common::gpu("gpu_ranks_match_in_process_gpu_replicas_bit_for_bit").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ranks, local) = (dir.path().join("r"), dir.path().join("l"));
    let args = ["--limit", "256", "--epochs", "1", "--batch-size", "32"];
    let mut a = args.to_vec();
    // Both ranks on adapter 0 (left to itself, rank 1 would take adapter 1, GL llvmpipe).
    a.extend(["--device", "0", "--snapshot-dir", ranks.to_str().unwrap()]);
    mpirun(2, &a);
    let mut b = args.to_vec();
    b.extend([
        "--devices",
        "0,0",
        "--snapshot-dir",
        local.to_str().unwrap(),
    ]);
    let (code, _, err) = gpu_train(&b);
    assert_eq!(code, 0, "{err}");
    assert!(
        latest(&ranks) == latest(&local),
        "GPU ranks differ from GPU replicas"
    );
}

#[test]
fn resume_under_mpirun_and_a_killed_rank_end_where_an_uninterrupted_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let common = [
        "--cpu",
        "--threads",
        "1",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--snapshot-every",
        "4",
        "--keep",
        "1000",
    ];
    let clean = d("clean");
    let mut a = common.to_vec();
    a.extend(["--snapshot-dir", &clean]);
    mpirun(2, &a);
    let want = latest(Path::new(&clean));

    // Resume from a mid-epoch snapshot of the clean run, under mpirun, into another folder.
    let mid = SnapshotDir::open(Path::new(&clean), 1000)
        .unwrap()
        .list()
        .unwrap()[30]
        .1
        .clone();
    let (_, state) = checkpoint::load(&mid).unwrap();
    assert!(state.next.step != 0 && state.replicas == 2, "{state:?}");
    let resumed = d("resumed");
    let mut a = common.to_vec();
    a.extend([
        "--snapshot-dir",
        &resumed,
        "--resume",
        mid.to_str().unwrap(),
    ]);
    mpirun(2, &a);
    assert!(
        latest(Path::new(&resumed)) == want,
        "resumed under mpirun, the weights differ"
    );

    // Kill rank 1 with SIGKILL once the job is well under way.
    let crashy = d("crashy");
    let mut a = common.to_vec();
    a.extend(["--snapshot-dir", &crashy]);
    let job = mpirun_cmd(2, &a)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while gpu_train::snapshots::latest_in(Path::new(&crashy)).unwrap().is_none()
        || start.elapsed() < Duration::from_millis(300)
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no snapshot appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The ranks: processes whose command line names this test's folder, but mpirun itself.
    let ranks: Vec<u32> = {
        let out = Command::new("pgrep")
            .args(["-f", &crashy])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|&p| p != job.id())
            .collect()
    };
    assert_eq!(ranks.len(), 2, "ranks: {ranks:?}");
    let _ = Command::new("kill")
        .args(["-KILL", &ranks[1].to_string()])
        .status();
    let out = wait(job, Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "mpirun went on after a rank was killed"
    );
    // Every snapshot on disk is whole, and resuming from the latest ends where the clean run did.
    let snaps = SnapshotDir::open(Path::new(&crashy), 1000).unwrap();
    let list = snaps.list().unwrap();
    assert!(!list.is_empty());
    for (_, p) in &list {
        checkpoint::load(p).unwrap_or_else(|e| panic!("a damaged snapshot was left: {e}"));
    }
    drop(snaps);
    let (_, at) = checkpoint::load(&list.last().unwrap().1).unwrap();
    assert!(
        at.next.epoch <= 3,
        "the kill came after the run had finished: {at:?}"
    );
    let mut a = common.to_vec();
    a.extend(["--snapshot-dir", &crashy, "--resume"]);
    mpirun(2, &a);
    assert!(
        latest(Path::new(&crashy)) == want,
        "after a killed rank and a resume, the weights differ"
    );
}

#[test]
fn mpi_needs_the_same_replica_count_on_every_rank_and_reports_the_job() {
    // Without mpirun a --mpi process is a job of one rank.
    let (code, out, err) = gpu_train(&["--mpi", "--cpu", "--epochs", "1", "--limit", "200"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("across 1 ranks"), "{out}");
}

#[test]
fn a_trace_under_mpirun_gathers_every_rank_on_rank_0() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    mpirun(
        2,
        &[
            "--cpu",
            "--threads",
            "1",
            "--limit",
            "512",
            "--epochs",
            "1",
            "--trace",
            trace.to_str().unwrap(),
            "--trace-steps",
            "0..3",
        ],
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let pids: std::collections::BTreeSet<u64> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, [0, 1].into(), "one process per rank in the trace");
    assert!(
        !dir.path().join("t.json.rank1").exists(),
        "rank 1's part was gathered and removed"
    );
}

/// A job whose ranks cannot all go on, started as `mpirun` starts it (one command line, or one
/// per rank with `:`), must end within seconds, non-zero, with the failing rank's reason.
fn mpirun_fails(ranks: &[&[&str]], want: &str) {
    mpirun_fails_as(&["--mpi"], ranks, want)
}

/// [`mpirun_fails`] with each rank's command line starting with `head` (a subcommand).
fn mpirun_fails_as(head: &[&str], ranks: &[&[&str]], want: &str) {
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg("--oversubscribe");
    for (i, args) in ranks.iter().enumerate() {
        if i > 0 {
            c.arg(":");
        }
        c.args(["-np", "1", BIN]).args(head).args(*args);
    }
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun");
    let started = Instant::now();
    let out = wait(child, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{ranks:?} succeeded:\n{err}");
    assert!(err.contains(want), "{ranks:?}: wanted {want:?} in:\n{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{ranks:?} took {:?} to fail",
        started.elapsed()
    );
}

#[test]
fn a_rank_that_refuses_its_input_ends_the_job_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let s = snaps.to_str().unwrap();
    let quick = ["--cpu", "--threads", "1", "--limit", "256", "--epochs", "1"];
    // A snapshot folder that already holds a run: rank 0 refuses it (the other rank waits).
    let first: Vec<&str> = quick.iter().copied().chain(["--snapshot-dir", s]).collect();
    mpirun(2, &first);
    mpirun_fails(&[&first, &first], "pass --resume to continue it");
    // Metrics onto a folder.
    let folder = dir.path().to_str().unwrap();
    let metrics: Vec<&str> = quick.iter().copied().chain(["--metrics", folder]).collect();
    mpirun_fails(&[&metrics, &metrics], "--metrics");
}

#[test]
fn ranks_started_with_different_settings_are_named_before_training() {
    let base = ["--cpu", "--threads", "1", "--limit", "256", "--epochs", "1"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    for (extra, flag) in [
        (&["--hidden", "64"][..], "--hidden"),
        (&["--batch-size", "32"][..], "--batch-size"),
        (&["--epochs", "2"][..], "--epochs"),
        (&["--lr", "0.05"][..], "--lr"),
    ] {
        mpirun_fails(&[&base, &with(extra)], flag);
    }
    let other_limit: Vec<&str> =
        ["--cpu", "--threads", "1", "--limit", "300", "--epochs", "1"].to_vec();
    mpirun_fails(&[&base, &other_limit], "--limit");
}

/// Ctrl-C on an MPI job (SIGINT to mpirun, which ends its ranks) says where to resume from,
/// as a single run does: before, the job ended with exit code 1 and nothing printed.
#[test]
fn ctrl_c_on_an_mpi_job_says_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("s");
    let child = mpirun_cmd(
        2,
        &[
            "--cpu",
            "--epochs",
            "100",
            "--snapshot-dir",
            snaps.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("mpirun");
    // Once the first snapshot is there, interrupt.
    let start = Instant::now();
    while std::fs::read_dir(&snaps).map_or(true, |d| {
        !d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no snapshot after 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = wait(child, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("gpu-train: rank 0 stopped by a signal (Ctrl-C, or mpirun ending the job); the latest snapshot is")
            && err.contains("continue with --resume"),
        "{err}"
    );
}

// Issue 29: allreduce-bench --mpi checks its flags as without --mpi, and compares the ranks';
// --fault given to one rank only is a difference between the ranks. (Issue 32: the messages
// name the flag as nccl-tests does, -e/--maxbytes; --max-bytes is still taken.)
#[test]
fn allreduce_bench_under_mpi_checks_its_flags_and_compares_the_ranks() {
    let bench = ["allreduce-bench", "--mpi"];
    for bytes in ["0", "1099511627776"] {
        let a: &[&str] = &["--max-bytes", bytes];
        mpirun_fails_as(
            &bench,
            &[a, a],
            &format!("-e/--maxbytes {bytes}: from 4 (one f32) to 1G"),
        );
    }
    mpirun_fails_as(
        &bench,
        &[&["--max-bytes", "64"], &["--max-bytes", "128"]],
        "different settings: -e/--maxbytes",
    );
    mpirun_fails_as(
        &bench,
        &[&["-e", "64", "-n", "5"], &["-e", "64", "-n", "6"]],
        "different settings: -n/--iters",
    );
    mpirun_fails_as(
        &bench,
        &[
            &["--max-bytes", "64"],
            &["--max-bytes", "64", "--json", "/tmp/gt-never.json"],
        ],
        "different settings: --json",
    );
}

#[test]
fn a_fault_given_to_one_rank_only_is_refused() {
    let run: &[&str] = &["--cpu", "--limit", "256", "--epochs", "1"];
    let with: Vec<&str> = [run, &["--fault", "lose-message@1:1"]].concat();
    mpirun_fails(&[&with, run], "different settings: --fault");
}

/// The rows of an `allreduce-bench` output by position, under each table's N (`# N = `), as
/// tests/network.rs's `check_nccl_tests_output` reads them (the same reading, for 2 ranks).
fn nccl_tests_tables(out: &str) -> Vec<(usize, Vec<Vec<String>>)> {
    let mut tables: Vec<(usize, Vec<Vec<String>>)> = Vec::new();
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("# N = ") {
            tables.push((n.split_whitespace().next().unwrap().parse().unwrap(), Vec::new()));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let t = tables.last_mut().unwrap_or_else(|| panic!("a row before any table: {line}"));
            t.1.push(line.split_whitespace().map(String::from).collect());
        }
    }
    tables
}

// Issue 32, item 4: under mpirun, the same nccl-tests table across 2 ranks, for our ring over
// MPI point-to-point and for MPI_Allreduce, every element of every rank's buffer checked.
#[test]
fn allreduce_bench_across_two_ranks_prints_all_reduce_perfs_table_with_no_wrong_element() {
    let flags = ["allreduce-bench", "--mpi", "-b", "8", "-e", "1M", "-f", "4", "-n", "10", "-w", "2", "-c", "1"];
    // Not mpirun_cmd: its `gpu-train --mpi` is the training run's flag, before a subcommand.
    let out = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "-np", "2", BIN])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun");
    let out = wait(out, Duration::from_secs(120));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("# ranks 2 minBytes 8 maxBytes 1048576 step: 4(factor) warmup iters: 2 iters: 10 validation: 1"), "{stdout}");
    let tables = nccl_tests_tables(&stdout);
    assert_eq!(tables.len(), 2, "our ring, then MPI_Allreduce:\n{stdout}");
    let sizes: Vec<usize> = std::iter::successors(Some(8usize), |b| Some(b * 4)).take_while(|&b| b <= 1 << 20).collect();
    let num = |s: &str| -> f64 { s.parse().unwrap_or_else(|_| panic!("{s:?} is not a number in:\n{stdout}")) };
    let mut busbw = Vec::new();
    for (n, rows) in &tables {
        assert_eq!(*n, 2);
        let got: Vec<usize> = rows.iter().map(|r| num(&r[0]) as usize).collect();
        assert_eq!(got, sizes, "{stdout}");
        for r in rows {
            assert_eq!(r.len(), 14, "14 columns in {r:?}");
            for c in [5, 9] {
                let (alg, bus) = (num(&r[c + 1]), num(&r[c + 2]));
                // 2 ranks: busbw = algbw × 2(2−1)/2, each printed to 2 decimals.
                assert!((bus - alg * 1.0).abs() <= 0.005 * 2.0 + 1e-9, "busbw ≠ algbw in {r:?}");
                assert_eq!(r[c + 3], "0", "#wrong in {r:?}");
                busbw.push(bus);
            }
        }
    }
    assert!(stdout.contains("# Out of bounds values : 0 OK"), "{stdout}");
    let avg = stdout.lines().find_map(|l| l.strip_prefix("# Avg bus bandwidth    : ")).expect("the average line");
    let mean = busbw.iter().sum::<f64>() / busbw.len() as f64;
    assert!((num(avg.trim()) - mean).abs() <= 0.005 + 1e-4, "average {avg} of {busbw:?}");
}
