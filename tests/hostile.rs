//! Hostile but realistic input (issue 13): two runs on one snapshot folder, resuming an older
//! snapshot, extreme numbers in every numeric flag, files whose headers lie, gzip bombs, huge
//! PNG headers, divergence that stays finite, forged snapshots, Ctrl-C. Every case ends with a
//! clear message and exit code 2 (bad input), 1 (a failure while running) or 130 (Ctrl-C),
//! never a panic (101) or an abort (134), and nothing a user keeps is lost.

mod common;
use common::gpu_train;
use gpu_train::checkpoint::{self, Position, TrainState};
use gpu_train::snapshots::SnapshotDir;
use gpu_train::data::{self, idx, PIXELS};
use gpu_train::model::Model;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gpu-train");

/// Runs the binary under a shell line (ulimit, signals); returns (code, stdout, stderr).
fn sh(line: &str) -> (i32, String, String) {
    let out = Command::new("bash").arg("-c").arg(line).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line gpu-train printed about the fault.
fn ours(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("gpu-train:"))
        .collect()
}

#[test]
fn a_second_run_on_a_metrics_file_being_written_is_refused_and_empties_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    // A running job's metrics file, one line written so far, held open as a run holds it.
    let running = gpu_train::network::metrics::Metrics::create(&path, None).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"kind\":\"step\"}\n")
        .unwrap();
    let args = ["--cpu", "--epochs", "1", "--limit", "200", "--metrics"];
    let (code, _, err) = gpu_train(&[&args[..], &[path.to_str().unwrap()]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("another gpu-train run is writing this file"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"kind\":\"step\"}\n");
    drop(running);
    let (code, _, err) = gpu_train(&[&args[..], &[path.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\"epoch\""));
}

#[test]
fn a_second_run_on_a_locked_folder_is_refused_before_it_touches_anything() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A running job: it holds the lock, and is in the middle of writing a snapshot.
    let running = SnapshotDir::open(dir.path(), 3).unwrap();
    let its_temp = dir.path().join(format!(
        ".tmp-snapshot-{}-snapshot-000000007.safetensors",
        std::process::id()
    ));
    std::fs::write(&its_temp, b"half written").unwrap();
    for args in [
        vec![
            "--cpu",
            "--epochs",
            "1",
            "--limit",
            "200",
            "--snapshot-dir",
            d,
        ],
        vec![
            "--cpu",
            "--epochs",
            "1",
            "--limit",
            "200",
            "--snapshot-dir",
            d,
            "--resume",
        ],
    ] {
        let (code, _, err) = gpu_train(&args);
        assert_eq!(code, 2, "{err}");
        assert!(
            ours(&err)[0].contains("another gpu-train run is using this snapshot folder"),
            "{err}"
        );
        assert!(
            its_temp.exists(),
            "the running job's temporary file was deleted"
        );
    }
    drop(running);
    // Once it ends (the OS drops the lock even on kill -9), the folder is usable, and a dead
    // run's temporary files are cleaned up, but not a user's file that merely looks similar.
    let mine = dir.path().join(".tmp-snapshot-mynotes");
    std::fs::write(&mine, b"my notes").unwrap();
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--snapshot-dir",
        d,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!its_temp.exists(), "a dead run's temporary file is removed");
    assert!(mine.exists(), "a user's file was deleted");
}

#[test]
fn two_fresh_runs_started_together_cannot_both_write_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let spawn = || {
        Command::new(BIN)
            .args([
                "--cpu",
                "--epochs",
                "3",
                "--limit",
                "2000",
                "--snapshot-dir",
                d,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    // Either one was refused (they overlapped), or the second found the first's snapshots
    // and was refused for that: never two successes over each other's files.
    assert!(
        codes.contains(&0) && codes.contains(&2),
        "exit codes {codes:?}"
    );
}

#[test]
fn resuming_an_older_snapshot_moves_the_newer_ones_aside_and_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // 640 images, batch 64: 10 steps an epoch; snapshots every 3 steps, keep 3.
    let base = [
        "--cpu",
        "--limit",
        "640",
        "--snapshot-dir",
        d,
        "--keep",
        "3",
    ];
    let mut args = base.to_vec();
    args.extend(["--epochs", "3", "--snapshot-every", "3"]);
    let (code, _, err) = gpu_train(&args);
    assert_eq!(code, 0, "{err}");
    let snaps = SnapshotDir::open(dir.path(), 3).unwrap();
    let steps: Vec<u64> = snaps.list().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(steps, vec![24, 27, 30]);
    // Go back to step 24 and continue with a lower learning rate into the same folder.
    let old = snaps.list().unwrap()[0].1.clone();
    drop(snaps);
    let mut args = base.to_vec();
    args.extend([
        "--epochs",
        "4",
        "--lr",
        "0.05",
        "--resume",
        old.to_str().unwrap(),
    ]);
    let (code, out, err) = gpu_train(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("moved them to") && out.contains("steps 27, 30"),
        "{out}"
    );
    let snaps = SnapshotDir::open(dir.path(), 3).unwrap();
    let now: Vec<(u64, TrainState)> = snaps
        .list()
        .unwrap()
        .iter()
        .map(|(s, p)| (*s, checkpoint::load(p).unwrap().1))
        .collect();
    // The newest snapshot is this run's (lr 0.05, the end of epoch 4), not deleted by --keep.
    let (last_step, last) = now.last().unwrap();
    assert_eq!(
        (*last_step, last.next),
        (40, Position { epoch: 5, step: 0 })
    );
    // Past the resumed step, only this run's snapshots are in the folder.
    assert!(
        now.iter().all(|(step, s)| *step <= 24 || s.lr == 0.05),
        "{now:?}"
    );
    let aside = dir.path().join("superseded-after-step-24");
    assert!(
        aside.join("snapshot-000000030.safetensors").is_file(),
        "the abandoned run's snapshots are kept aside"
    );
}

/// Runs `args` with a time limit; Ok(code) if it ended, Err(()) if it was still running.
fn run_for(args: &[String], limit: Duration) -> Result<(i32, String), ()> {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return Ok((status.code().unwrap_or(-1), err));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn extreme_values_in_every_numeric_flag_never_panic() {
    let values = [
        "0",
        "1",
        "2147483648",
        "4611686018427387904",
        "18446744073709551615",
        "-1",
        "NaN",
        "1e300",
    ];
    // (subcommand and fixed arguments that keep a valid run short, the flags to vary)
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--cpu", "--limit", "200", "--epochs", "1"],
            vec![
                "--epochs",
                "--batch-size",
                "--lr",
                "--seed",
                "--limit",
                "--threads",
                "--replicas",
                "--snapshot-every",
                "--keep",
            ],
        ),
        (
            vec!["--limit", "200", "--epochs", "1"],
            vec!["--device", "--batch-size", "--devices", "--replicas"],
        ),
        (vec!["explain"], vec!["--image", "--epochs", "--seed"]),
        (
            vec![
                "bench",
                "--cpu-only",
                "--limit",
                "200",
                "--epochs",
                "1",
                "--warmup",
                "0",
                "--replicas",
                "1",
            ],
            vec![
                "--epochs",
                "--warmup",
                "--batch-size",
                "--lr",
                "--seed",
                "--replicas",
                "--peak-tflops",
            ],
        ),
        (vec!["predict", "data/none.safetensors"], vec!["--index"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut tried = 0;
    let mut slow = Vec::new();
    for (fixed, flags) in &cases {
        for flag in flags {
            for v in values {
                let mut args: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
                // --snapshot-every and --keep need a folder; --snapshot-dir is fresh each time.
                if *flag == "--snapshot-every" || *flag == "--keep" {
                    let d = dir.path().join(format!("s{tried}"));
                    args.extend([
                        "--snapshot-dir".to_string(),
                        d.to_str().unwrap().to_string(),
                    ]);
                }
                args.extend([flag.to_string(), v.to_string()]);
                tried += 1;
                match run_for(&args, Duration::from_secs(20)) {
                    // Every case is a short run or a refusal: one still running after 20 s
                    // hangs, or took a value it should have refused as too large.
                    Err(()) => slow.push(args.join(" ")),
                    Ok((code, err)) => {
                        assert!(
                            code == 0 || code == 1 || code == 2,
                            "{args:?}: exit {code} (a panic is 101, an abort 134):\n{err}"
                        );
                        if code != 0 {
                            assert_eq!(ours(&err).len(), 1, "{args:?}: not one line:\n{err}");
                        }
                    }
                }
            }
        }
    }
    assert!(tried > 150);
    assert!(
        slow.is_empty(),
        "still running after 20 s:\n{}",
        slow.join("\n")
    );
}

#[test]
fn a_gpu_batch_near_2_to_the_62_is_refused_not_wrapped() {
    if common::gpu("a_gpu_batch_near_2_to_the_62_is_refused_not_wrapped").is_none() {
        return;
    }
    // Straight into the engine, past the CLI's own limit: the size arithmetic must refuse.
    let data = data::Dataset::new(vec![0; PIXELS], vec![1]).unwrap();
    for batch in [1usize << 62, 1 << 63, usize::MAX] {
        for resident in [false, true] {
            let opts = gpu_train::gpu::buffers::GpuOptions {
                batch,
                resident,
                ring: 2,
                ..gpu_train::gpu::buffers::GpuOptions::default()
            };
            let gpu = common::gpu("gpu").unwrap();
            let err = gpu_train::gpu::engine::state::GpuEngine::new(gpu, &Model::init(1), opts, &data)
                .err()
                .expect("refused");
            assert!(err.to_string().contains("is too large"), "{err}");
        }
    }
    // And through the CLI.
    let (code, _, err) = gpu_train(&["--batch-size", "4611686018427387904", "--limit", "100"]);
    assert_eq!(code, 2, "{err}");
}

/// A PNG of `w`×`h` that is only a header (129 bytes): signature, IHDR, an empty IDAT, IEND.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn huge_pngs_and_lying_data_files_cost_no_more_memory_than_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--snapshot-dir",
        snaps.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let snap = SnapshotDir::open(&snaps, 3)
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    let png = dir.path().join("huge.png");
    std::fs::write(&png, png_header_only(100_000, 100_000)).unwrap();
    // Under a 1 GiB address-space limit: yesterday's 40 GB allocation aborts, today's check
    // refuses the header.
    let limit = "ulimit -v 1048576;";
    let (code, _, err) = sh(&format!(
        "{limit} '{BIN}' predict '{}' --png '{}'",
        snap.display(),
        png.display()
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("far larger than 28x28") || ours(&err)[0].contains("100000x100000"),
        "{err}"
    );

    // A 3 GB raw file (sparse: it takes no disk) whose header is not IDX at all, and one whose
    // header promises 1 image: refused from the header and the file's size, without reading.
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let sample = data::bundled_dir();
    for f in [
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(sample.join(f), data_dir.join(f)).unwrap();
    }
    let big = data_dir.join("train-images-idx3-ubyte");
    for header in [[0u8; 16], {
        let mut h = [0u8; 16];
        h[..16].copy_from_slice(&idx::encode_images(1, 28, 28, &[])[..16]);
        h
    }] {
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(&header).unwrap();
        f.set_len(3_000_000_000).unwrap();
        drop(f);
        let (code, _, err) = sh(&format!(
            "{limit} '{BIN}' --cpu --epochs 1 --data-dir '{}'",
            data_dir.display()
        ));
        assert_eq!(code, 2, "{err}");
        let line = ours(&err)[0];
        assert!(
            line.contains("magic number is 0x00000000")
                || line.contains("header says 1 images of 28x28")
                // The headers are compared before any payload: 10,000 labels, 1 image.
                || line.contains("says 10000 labels but train-images-idx3-ubyte's says 1 images"),
            "{line}"
        );
    }
    std::fs::remove_file(&big).unwrap();

    // gzip: a bomb of zeros (50 MB inflated from 50 kB) stops at the 16-byte header.
    let gz = common::gzip;
    let bomb = data_dir.join("train-images-idx3-ubyte.gz");
    std::fs::write(&bomb, gz(&vec![0u8; 50_000_000])).unwrap();
    let (code, _, err) = sh(&format!(
        "{limit} '{BIN}' --cpu --epochs 1 --data-dir '{}'",
        data_dir.display()
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("magic number is 0x00000000"),
        "{err}"
    );
    // A valid header claiming 2,739,137 images in front of only 2,000 (and labels whose header
    // claims as many: headers that disagree are refused whatever --limit says): with --limit
    // 2000 only those are read (and the labels' first 2,000); without, the file is refused.
    let mut claim = idx::encode_images(2000, 28, 28, &vec![7u8; 2000 * PIXELS]);
    claim[4..8].copy_from_slice(&2_739_137u32.to_be_bytes());
    std::fs::write(&bomb, gz(&claim)).unwrap();
    let mut labels = idx::encode_labels(&[3u8; 2000]);
    labels[4..8].copy_from_slice(&2_739_137u32.to_be_bytes());
    std::fs::write(data_dir.join("train-labels-idx1-ubyte.gz"), gz(&labels)).unwrap();
    let (code, out, err) = sh(&format!(
        "{limit} '{BIN}' --cpu --epochs 1 --limit 2000 --data-dir '{}'",
        data_dir.display()
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2000 training images"), "{out}");
    let (code, _, err) = sh(&format!(
        "{limit} '{BIN}' --cpu --epochs 1 --data-dir '{}'",
        data_dir.display()
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("header says 2739137 images of 28x28 (2147483408 bytes)"),
        "{err}"
    );
    // A valid header claiming 1,400,000 images with all of them there: 1.1 GB of zeros in a
    // 1 MB gzip. It is refused from its size before a byte is inflated (before, it was read
    // to its end: over 1 GB of memory).
    let count = 1_400_000usize;
    let mut header = idx::encode_images(0, 28, 28, &[]);
    header[4..8].copy_from_slice(&(count as u32).to_be_bytes());
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(&header[..16]).unwrap();
    let row = vec![0u8; PIXELS * 1000];
    for _ in 0..count / 1000 {
        e.write_all(&row).unwrap();
    }
    e.finish().unwrap();
    labels[4..8].copy_from_slice(&(count as u32).to_be_bytes());
    std::fs::write(data_dir.join("train-labels-idx1-ubyte.gz"), gz(&labels)).unwrap();
    let (code, _, err) = sh(&format!(
        "{limit} '{BIN}' --cpu --epochs 1 --data-dir '{}'",
        data_dir.display()
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("image data does not inflate"),
        "{err}"
    );
}

#[test]
fn divergence_that_stays_finite_stops_the_run_and_writes_no_snapshot_of_it() {
    for lr in ["10", "1000000"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let (code, _, err) =
            gpu_train(&["--cpu", "--epochs", "3", "--lr", lr, "--snapshot-dir", d]);
        assert_eq!(code, 1, "--lr {lr}: {err}");
        let line = ours(&err)[0];
        assert!(
            line.contains("training diverged")
                && line.contains("ln 10")
                && line.contains("lower --lr"),
            "{line}"
        );
        let snaps = SnapshotDir::open(dir.path(), 3).unwrap();
        assert!(
            snaps.list().unwrap().is_empty(),
            "--lr {lr}: a diverged run wrote snapshots"
        );
    }
    // A healthy run never comes near the threshold.
    let (code, _, err) = gpu_train(&["--cpu", "--epochs", "2", "--lr", "0.5"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn data_files_that_look_odd_but_are_fine_or_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let sample = data::bundled_dir();
    for f in [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(sample.join(f), dir.path().join(f)).unwrap();
    }
    // A multi-member gzip (`cat a.gz b.gz`, which `gzip -t` accepts) is one stream.
    let whole = idx::read_file(&sample.join("train-images-idx3-ubyte.gz")).unwrap();
    let gz = common::gzip;
    let mut two = gz(&whole[..1000]);
    two.extend(gz(&whole[1000..]));
    std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), &two).unwrap();
    let split = data::load_dir(dir.path()).unwrap();
    assert_eq!(split.train.len(), 10_000);
    // Both a raw and a .gz file: which one is meant is a guess, so neither is read.
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), &whole).unwrap();
    let e = data::load_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("both train-images-idx3-ubyte and train-images-idx3-ubyte.gz"),
        "{e}"
    );
    // Header dimensions of 2^32 − 1: the byte count in the message is computed without overflow.
    let mut h = idx::encode_images(0, 1, 1, &[]);
    h[4..16].copy_from_slice(&[0xff; 12]);
    let e = idx::parse_images(&h, "x").unwrap_err().to_string();
    let want = (u32::MAX as u128).pow(3).to_string();
    assert!(e.contains(&want), "{e}");
}

#[test]
fn snapshot_names_and_states_that_are_not_ours_are_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "2",
        "--limit",
        "200",
        "--snapshot-dir",
        d,
    ]);
    assert_eq!(code, 0, "{err}");
    let snaps = SnapshotDir::open(dir.path(), 3).unwrap();
    let (model, state) = checkpoint::load(&snaps.latest().unwrap().unwrap()).unwrap();
    // A file named with a sign is not a snapshot (and never picked as the latest).
    std::fs::write(dir.path().join("snapshot-+99.safetensors"), b"x").unwrap();
    assert_eq!(snaps.list().unwrap().len(), 2);
    drop(snaps);
    // Resuming a finished 2-epoch run with --epochs 1 says what to do.
    let (code, out, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--snapshot-dir",
        d,
        "--resume",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("already completed 2 epoch(s)") && out.contains("--epochs 3"),
        "{out}"
    );
    // Forged states with a valid checksum: next epoch 0, a step past the epoch's end.
    for next in [
        Position { epoch: 0, step: 0 },
        Position {
            epoch: 1,
            step: 1_000_000,
        },
    ] {
        let forged = dir.path().join("forged.safetensors");
        let bytes = checkpoint::encode(
            &model,
            &TrainState {
                next,
                ..state.clone()
            },
        )
        .unwrap();
        std::fs::write(&forged, bytes).unwrap();
        let (code, _, err) = gpu_train(&[
            "--cpu",
            "--epochs",
            "3",
            "--limit",
            "200",
            "--resume",
            forged.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(
            ours(&err)[0].contains("training state is impossible"),
            "{err}"
        );
    }
    // NaN weights: predict refuses them instead of printing a table of NaN.
    let mut nan = model.clone();
    nan.w2[0] = f32::NAN;
    let bad = dir.path().join("nan.safetensors");
    std::fs::write(&bad, checkpoint::encode(&nan, &state).unwrap()).unwrap();
    let (code, _, err) = gpu_train(&["predict", bad.to_str().unwrap(), "--index", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(ours(&err)[0].contains("NaN"), "{err}");
}

#[test]
fn ctrl_c_finishes_the_step_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A snapshot every step, so the interrupt very likely lands near a write.
    let child = Command::new(BIN)
        .args([
            "--cpu",
            "--threads",
            "1",
            "--epochs",
            "50",
            "--snapshot-dir",
            d,
            "--snapshot-every",
            "1",
            "--keep",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run is writing snapshots, then interrupt.
    let start = Instant::now();
    while std::fs::read_dir(dir.path()).unwrap().count() < 3
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        ours(&err)[0].contains("interrupted at epoch") && ours(&err)[0].contains("--resume"),
        "{err}"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".tmp-snapshot-")),
        "{names:?}"
    );
    // And it resumes.
    let snaps = SnapshotDir::open(dir.path(), 2).unwrap();
    checkpoint::load(&snaps.latest().unwrap().unwrap()).unwrap();
    let _ = Path::new(d);
}

/// A forged snapshot whose checksum is right but whose batch size is 0 (it divided a run by
/// zero, exit 101) or whose loss scale is infinite (every step skipped, exit 0) is refused on
/// load with the value it holds.
#[test]
fn forged_snapshot_values_are_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::init(1);
    let good = TrainState {
        next: Position { epoch: 1, step: 0 },
        global_step: 0,
        seed: 42,
        lr: 0.1,
        batch_size: 64,
        replicas: 1,
        train_len: 200,
        train_fingerprint: 0,
        loss_scale: None,
        trained_on: None,
    };
    for (state, want) in [
        (
            TrainState {
                batch_size: 0,
                ..good.clone()
            },
            "batch_size = 0",
        ),
        (
            TrainState {
                loss_scale: Some((f32::INFINITY, 0)),
                ..good.clone()
            },
            "loss scale = inf",
        ),
    ] {
        let forged = dir.path().join("forged.safetensors");
        std::fs::write(&forged, checkpoint::encode(&model, &state).unwrap()).unwrap();
        let (code, _, err) = gpu_train(&[
            "--cpu",
            "--limit",
            "200",
            "--resume",
            forged.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "{err}");
    }
}

/// Divergence is judged on the loss over at least DIVERGENCE_WINDOW examples, however often
/// the run looks: a healthy run at batch size 1 with a metrics line every step used to be
/// stopped as "diverged" by the first single example whose loss was above 2·ln 10.
#[test]
fn a_healthy_batch_size_1_run_checked_every_step_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("m.jsonl");
    let (code, out, err) = gpu_train(&[
        "--cpu",
        "--batch-size",
        "1",
        "--epochs",
        "1",
        "--metrics",
        metrics.to_str().unwrap(),
        "--metrics-every",
        "1",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("final test accuracy"), "{out}");
}

/// Makes a FIFO at `path` (mkfifo needs no privilege).
fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Every input path given a FIFO (and, as root, a character device made here with mknod) is
/// refused at once, naming what it is: before, `network` and `--init` blocked forever on a
/// FIFO and `explain --weights /dev/zero` read 2 GB.
#[test]
fn fifos_and_devices_given_as_inputs_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mkfifo(&d.join("fifo"));
    let mut nodes = vec![("fifo", "a FIFO")];
    let made = Command::new("mknod")
        .arg(d.join("zero"))
        .args(["c", "1", "5"])
        .status()
        .is_ok_and(|s| s.success());
    if made {
        nodes.push(("zero", "a character device"));
    } else {
        eprintln!("NOTE: mknod is not allowed here (not root): the device-node cases are left out");
    }
    // A data folder whose four files are FIFOs.
    let data = d.join("data");
    std::fs::create_dir(&data).unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        mkfifo(&data.join(f));
    }
    let snaps = d.join("snaps");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--snapshot-dir",
        snaps.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let snapshot = gpu_train::snapshots::latest_in(&snaps).unwrap().expect("a snapshot");
    for (node, kind) in nodes {
        let p = d.join(node);
        let p = p.to_str().unwrap();
        let short = ["--cpu", "--limit", "64", "--epochs", "1"];
        let cases: Vec<Vec<&str>> = vec![
            vec!["network", p],
            vec!["plot", p],
            vec!["predict", p, "--index", "0"],
            vec!["predict", snapshot.to_str().unwrap(), "--png", p],
            [&short[..], &["--init", p]].concat(),
            [&short[..], &["--resume", p]].concat(),
            vec!["explain", "--weights", p],
        ];
        for args in cases {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let started = Instant::now();
            let Ok((code, err)) = run_for(&args, Duration::from_secs(10)) else {
                panic!("{args:?}: still running after 10 s");
            };
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{args:?} took {:?}",
                started.elapsed()
            );
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(
                err.contains(&format!("{kind}, not a regular file")),
                "{args:?}: {err}"
            );
        }
    }
    let args: Vec<String> = [
        "--cpu",
        "--epochs",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, err) = run_for(&args, Duration::from_secs(10)).expect("ends");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a FIFO, not a regular file"), "{err}");
}

/// A snapshot folder's `.lock` that is a symbolic link (or a FIFO) is refused: before, the
/// link's target was truncated to the run's process id.
#[test]
fn a_lock_file_that_is_a_link_or_a_fifo_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let victim = d.join("victim");
    std::fs::write(&victim, "keep me\n").unwrap();
    let snaps = d.join("s");
    std::fs::create_dir(&snaps).unwrap();
    std::os::unix::fs::symlink(&victim, snaps.join(".lock")).unwrap();
    let s = snaps.to_str().unwrap();
    let run = [
        "--cpu",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--snapshot-dir",
        s,
    ];
    let (code, _, err) = gpu_train(&run);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    std::fs::remove_file(snaps.join(".lock")).unwrap();
    mkfifo(&snaps.join(".lock"));
    let args: Vec<String> = run.iter().map(|s| s.to_string()).collect();
    let (code, err) = run_for(&args, Duration::from_secs(10)).expect("ends");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a FIFO"), "{err}");
}

/// `predict --index 0` and `explain` read only the test images they show: a test set of 1.4
/// million images (a 1.1 GB sparse file) costs them nothing (before, they read it whole,
/// over a 1 GiB memory limit).
#[test]
fn predict_and_explain_read_only_the_images_they_show() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    std::fs::create_dir(&data).unwrap();
    let sample = data::bundled_dir();
    for f in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        std::fs::copy(sample.join(f), data.join(f)).unwrap();
    }
    let count = 1_400_000u64;
    let mut header = idx::encode_images(0, 28, 28, &[]);
    header[4..8].copy_from_slice(&(count as u32).to_be_bytes());
    let images = std::fs::File::create(data.join("t10k-images-idx3-ubyte")).unwrap();
    (&images).write_all(&header[..16]).unwrap();
    images.set_len(16 + count * PIXELS as u64).unwrap();
    let mut labels = idx::encode_labels(&[]);
    labels[4..8].copy_from_slice(&(count as u32).to_be_bytes());
    let l = std::fs::File::create(data.join("t10k-labels-idx1-ubyte")).unwrap();
    (&l).write_all(&labels[..8]).unwrap();
    l.set_len(8 + count).unwrap();
    let snaps = d.join("s");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--snapshot-dir",
        snaps.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let snapshot = gpu_train::snapshots::latest_in(&snaps).unwrap().expect("a snapshot");
    let dd = data.display();
    for line in [
        format!(
            "predict '{}' --index 0 --index 5 --data-dir '{dd}'",
            snapshot.display()
        ),
        format!("explain --image 5 --data-dir '{dd}'"),
    ] {
        let (code, out, err) = sh(&format!("ulimit -v 1048576; '{BIN}' {line}"));
        assert_eq!(code, 0, "{line}: {err}");
        assert!(!out.is_empty(), "{line}");
    }
}
