//! The last bad inputs (issue 29): each test here is one cause a hostile user found, with the
//! command that showed it, and fails on the code before the fix. Data-loss cases check the
//! files on disk (the good snapshot still loads, the input's bytes unchanged). Full disks are
//! 1 MiB tmpfs mounts in a private mount namespace (`unshare`), never the machine's own.

mod common;
use common::{gpu_train, gzip, wait};
use gpu_train::checkpoint;
use gpu_train::snapshots::SnapshotDir;
use gpu_train::data::idx;
use gpu_train::model::Model;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gpu-train");

/// gpu-train's own lines on stderr.
fn ours(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("gpu-train:"))
        .collect()
}

/// The bundled sample's four files copied into a fresh folder (a test may see them harmed).
fn data_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for e in std::fs::read_dir(gpu_train::data::bundled_dir()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".gz") {
            std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
        }
    }
    (dir, data)
}

/// A one-epoch CPU run of 100 examples on the data in `data`: (exit code, stdout, stderr).
fn quick_run(data: &Path) -> (i32, String, String) {
    gpu_train(&[
        "--cpu",
        "--limit",
        "100",
        "--epochs",
        "1",
        "--data-dir",
        s(data),
    ])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `line` (bash) where `dir` is a full 16 MiB tmpfs (a private mount namespace: nothing
/// outside the command sees it). `setup` runs first, on the empty mount, then the disk is
/// filled. None, and a note, where mount namespaces are not allowed; under CI that fails.
fn on_full_disk(dir: &Path, setup: &str, line: &str) -> Option<(i32, String, String)> {
    let root = unsafe { libc::geteuid() } == 0;
    let script = format!(
        "set -e; mount -t tmpfs -o size=16m none {d}; {setup}; \
         dd if=/dev/zero of={d}/.filler bs=4k >/dev/null 2>&1 || true; set +e; {line}",
        d = s(dir)
    );
    let mut cmd = Command::new("unshare");
    cmd.args(if root { &["-m"][..] } else { &["-rm"][..] })
        .args(["bash", "-c", &script]);
    let out = cmd.output().ok();
    match out {
        Some(o)
            if !String::from_utf8_lossy(&o.stderr).contains("mount: ") || o.status.success() =>
        {
            Some((
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ))
        }
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "a full-disk test needs `unshare -m` (root) or user namespaces, and CI has neither"
            )
        }
        _ => {
            eprintln!("SKIPPED: no mount namespace here for a full-disk test");
            None
        }
    }
}

// 1. Diverged snapshots must never rotate the good ones out.
#[test]
fn a_diverging_resume_writes_no_snapshot_and_keeps_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("s1");
    let run = ["--cpu", "--limit", "640"];
    let (code, _, err) =
        gpu_train(&[&run[..], &["--epochs", "3", "--snapshot-dir", s(&good)]].concat());
    assert_eq!(code, 0, "{err}");
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    for e in std::fs::read_dir(&good).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    let (code, _, err) = gpu_train(
        &[
            &run[..],
            &[
                "--epochs",
                "6",
                "--snapshot-dir",
                s(&d),
                "--resume",
                "--lr",
                "1e6",
            ],
            &["--snapshot-every", "1", "--keep", "3"],
        ]
        .concat(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(ours(&err)[0].contains("training diverged"), "{err}");
    let snaps = SnapshotDir::open(&d, 3).unwrap().list().unwrap();
    let steps: Vec<u64> = snaps.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        [10, 20, 30],
        "the good snapshots must stay, and no diverged one be written"
    );
    for (_, p) in &snaps {
        let (m, _) = checkpoint::load(p).unwrap();
        assert!(
            max_abs(&m) < 10.0,
            "{}: max |w| {}",
            p.display(),
            max_abs(&m)
        );
    }
    // A fresh run that diverges writes nothing at all.
    let f = dir.path().join("f");
    let (code, _, err) = gpu_train(
        &[
            &run[..],
            &[
                "--epochs",
                "3",
                "--lr",
                "1e6",
                "--snapshot-every",
                "3",
                "--snapshot-dir",
                s(&f),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(SnapshotDir::open(&f, 3).unwrap().list().unwrap().is_empty());
}

fn max_abs(m: &Model) -> f32 {
    m.tensors()
        .iter()
        .flat_map(|t| t.2.iter())
        .fold(0.0f32, |a, v| a.max(v.abs()))
}

// 2. No output may be one of the run's inputs, nor lie in the snapshot folder.
#[test]
fn no_output_overwrites_an_input_or_a_snapshot() {
    let (tmp, data) = data_copy();
    let dir = tmp.path();
    let w = dir.join("w.safetensors");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--limit",
        "200",
        "--epochs",
        "1",
        "--snapshot-dir",
        s(&dir.join("sd")),
    ]);
    assert_eq!(code, 0, "{err}");
    let snap = SnapshotDir::open(&dir.join("sd"), 3)
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    std::fs::copy(&snap, &w).unwrap();
    let link = dir.join("same-weights.safetensors");
    std::fs::hard_link(&w, &link).unwrap();
    let labels = data.join("train-labels-idx1-ubyte.gz");
    let test_labels = data.join("t10k-labels-idx1-ubyte.gz");
    let before: Vec<Vec<u8>> = [&w, &labels, &test_labels, &snap]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let base = [
        "--cpu",
        "--limit",
        "200",
        "--epochs",
        "1",
        "--data-dir",
        s(&data),
    ];
    let tries: Vec<Vec<&str>> = vec![
        [
            &base[..],
            &["--init", s(&w), "--trace", s(&w), "--replicas", "2"],
        ]
        .concat(),
        [&base[..], &["--init", s(&w), "--metrics", s(&link)]].concat(),
        [&base[..], &["--metrics", s(&test_labels)]].concat(),
        [&base[..], &["--resume", s(&snap), "--metrics", s(&snap)]].concat(),
        vec![
            "bench",
            "--cpu-only",
            "--epochs",
            "1",
            "--warmup",
            "0",
            "--replicas",
            "1",
            "--no-f16",
            "--limit",
            "200",
            "--data-dir",
            s(&data),
            "--json",
            s(&labels),
        ],
    ];
    for args in &tries {
        let (code, _, err) = gpu_train(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(ours(&err)[0].contains("input"), "{args:?}: {err}");
    }
    // An output file inside the snapshot folder: --keep would delete it.
    let sd = dir.join("sd2");
    std::fs::create_dir(&sd).unwrap();
    let (code, _, err) = gpu_train(
        &[
            &base[..],
            &[
                "--snapshot-dir",
                s(&sd),
                "--metrics",
                s(&sd.join("snapshot-000000010.safetensors")),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("inside the snapshot folder"),
        "{err}"
    );
    let after: Vec<Vec<u8>> = [&w, &labels, &test_labels, &snap]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(before == after, "an input's bytes changed");
    // `plot` and `network` never draw over an input that is a picture in their --out.
    let m = dir.join("pics").join("loss-by-epoch.png");
    std::fs::create_dir(dir.join("pics")).unwrap();
    std::fs::write(&m, b"{}").unwrap();
    let (code, _, err) = gpu_train(&["plot", s(&m), "--out", s(&dir.join("pics"))]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(std::fs::read(&m).unwrap(), b"{}");
}

// 4 and 5. `network` checks the whole trace before it prints or loops over anything.
fn trace_with(span: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"traceEvents": [
        {"name": "stage + record", "ph": "X", "ts": 0.0, "dur": 100.0, "pid": 0, "tid": 0, "args": {"step": 0}},
        {"name": "all-reduce", "ph": "X", "ts": 100.0, "dur": 50.0, "pid": 0, "tid": 0,
         "args": {"bytes_sent": 1000, "peers": 2, "messages": 2}},
        span,
        {"name": "NIC eth0 (measured), bytes", "ph": "C", "ts": 120.0, "pid": 0,
         "args": {"tx": 1000, "rx": 0, "tx_packets": 1, "rx_packets": 0, "tcp_retransmits": 0}},
        {"name": "NIC eth0 (measured), Mbit/s", "ph": "C", "ts": 100.0, "pid": 0, "args": {"tx": 1.0, "rx": 0.0}},
    ]})
}

#[test]
fn a_trace_with_times_out_of_bounds_or_as_text_is_refused_before_anything_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let far = serde_json::json!({"name": "stage + record", "ph": "X", "ts": 1e15, "dur": 10.0,
                                 "pid": 0, "tid": 0, "args": {"step": 1}});
    let text = serde_json::json!({"name": "stage + record", "ph": "X", "ts": "200", "dur": "100",
                                  "pid": 0, "tid": 0, "args": {"step": 1}});
    let negative = serde_json::json!({"name": "all-reduce", "ph": "X", "ts": 300.0, "dur": -50.0,
                                      "pid": 0, "tid": 0, "args": {"bytes_sent": 10}});
    let no_args = serde_json::json!({"name": "all-reduce (hidden)", "ph": "X", "ts": 300.0, "dur": 5.0,
                                     "pid": 0, "tid": 0});
    let huge = serde_json::json!({"name": "all-reduce", "ph": "X", "ts": 300.0, "dur": 5.0,
                                  "pid": 0, "tid": 0, "args": {"bytes_sent": 1u64 << 63}});
    for (name, span, fault) in [
        ("far", far, "ts = 1000000000000000"),
        ("text", text, "not a number"),
        ("negative", negative, "dur = -50"),
        ("no-args", no_args, "without a whole number of bytes_sent"),
        ("huge", huge, "not a whole number from 0 to 2^48"),
    ] {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, trace_with(span).to_string()).unwrap();
        let started = Instant::now();
        let child = Command::new(BIN)
            .args(["network", s(&path), "--out", s(&dir.path().join("out"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait(child, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{name}: printed before refusing: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(ours(&err)[0].contains(fault), "{name}: {err}");
        assert!(started.elapsed() < Duration::from_secs(30), "{name}");
    }
    // A step that spans 10^11 µs within bounds (a day's worth of 10 ms windows) costs its
    // samples, not its windows.
    let long = serde_json::json!({"name": "stage + record", "ph": "X", "ts": 200.0, "dur": 1e11,
                                  "pid": 0, "tid": 0, "args": {"step": 1}});
    let path = dir.path().join("long.json");
    std::fs::write(&path, trace_with(long).to_string()).unwrap();
    let child = Command::new(BIN)
        .args(["network", s(&path), "--out", s(&dir.path().join("out"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait(child, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// 6. A full cache folder must not kill a GPU run with a bare "Bus error".
#[test]
fn a_full_cache_folder_leaves_mesa_s_shader_cache_off_and_the_run_trains() {
    if common::gpu("a_full_cache_folder_leaves_mesa_s_shader_cache_off_and_the_run_trains")
        .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    // Mesa's own cache variables cleared, so the folder it uses is the full one.
    let line = format!(
        "env -u MESA_SHADER_CACHE_DIR -u MESA_SHADER_CACHE_DISABLE XDG_CACHE_HOME={} {BIN} --limit 128 --epochs 1 --kernels reg8x4",
        s(&cache)
    );
    let Some((code, out, err)) = on_full_disk(&cache, "true", &line) else {
        return;
    };
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("final test accuracy"), "{out}");
    assert!(
        err.contains("shader cache"),
        "the warning says why the cache is off: {err}"
    );
}

// 7 and 14. Pictures and JSON on a full disk: one line about the write, nothing half-written,
// the previous files whole.
#[test]
fn a_full_disk_is_reported_as_a_write_and_the_previous_outputs_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let metrics = dir.path().join("m.jsonl");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--limit",
        "640",
        "--epochs",
        "2",
        "--metrics",
        s(&metrics),
        "--metrics-every",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    // The previous pictures (from a healthy plot) are on the disk before it fills.
    let setup = format!("{BIN} plot {} --out {} >/dev/null", s(&metrics), s(&out));
    let line = format!(
        "before=$(md5sum {o}/*.png {o}/*.svg); {BIN} plot {m} --out {o}; rc=$?; \
         [ \"$before\" = \"$(md5sum {o}/*.png {o}/*.svg)\" ] && echo SAME; \
         {BIN} bench --cpu-only --epochs 1 --warmup 0 --replicas 1 --no-f16 --limit 128 --json {o}/b.json >/dev/null; \
         echo \"bench=$? $(stat -c %s {o}/b.json 2>&1 | head -c 40)\"; ls -a {o}; exit $rc",
        o = s(&out),
        m = s(&metrics)
    );
    let Some((code, stdout, err)) = on_full_disk(&out, &setup, &line) else {
        return;
    };
    assert_eq!(code, 1, "{stdout}\n{err}");
    let lines = ours(&err);
    assert!(
        lines[0].contains("cannot write the picture") && lines[0].contains("No space left"),
        "{err}"
    );
    assert!(
        !err.contains("BackendError") && !err.contains("IoError"),
        "{err}"
    );
    assert!(
        stdout.contains("SAME"),
        "the previous pictures changed: {stdout}"
    );
    assert!(
        stdout.contains("bench=1 stat:"),
        "bench --json: exit 1 and no file left: {stdout}\n{err}"
    );
    assert!(err.contains("cannot write the benchmark's JSON"), "{err}");
    assert!(
        !stdout.contains(".tmp-"),
        "a temporary file was left: {stdout}"
    );
}

// 8. --fault that cannot act is refused.
#[test]
#[cfg(feature = "mpi")]
fn a_fault_under_mpi_with_one_rank_is_refused() {
    let (code, _, err) = gpu_train(&[
        "--mpi",
        "--cpu",
        "--replicas",
        "2",
        "--limit",
        "256",
        "--epochs",
        "1",
        "--fault",
        "lose-message@2:1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--fault acts on the all-reduce's messages"),
        "{err}"
    );
}

// 9. Headers that disagree are refused whatever --limit says.
#[test]
fn image_and_label_headers_that_disagree_are_refused_under_limit() {
    let (tmp, data) = data_copy();
    let images: Vec<u8> = vec![7; 2000 * 784];
    let write = |name: &str, bytes: Vec<u8>| {
        let _ = std::fs::remove_file(data.join(format!("{name}.gz")));
        std::fs::write(data.join(name), bytes).unwrap();
    };
    write(
        "train-images-idx3-ubyte",
        idx::encode_images(2000, 28, 28, &images),
    );
    write("train-labels-idx1-ubyte", idx::encode_labels(&[1; 1999]));
    let (code, _, err) = quick_run(&data);
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("1999 labels") && ours(&err)[0].contains("2000 images"),
        "{err}"
    );
    // A labels header of 2e9 against 2,000 images (the labels themselves are 2,000 zeros).
    let mut lying = idx::encode_labels(&[0; 2000]);
    lying[4..8].copy_from_slice(&2_000_000_000u32.to_be_bytes());
    write("train-labels-idx1-ubyte", lying);
    let (code, _, err) = quick_run(&data);
    assert_eq!(code, 2, "{err}");
    assert!(ours(&err)[0].contains("2000000000 labels"), "{err}");
    drop(tmp);
}

/// A raw IDX image file whose header says `count` images, of the size that makes it honest,
/// written sparse (no disk, no memory).
fn sparse_images(path: &Path, count: u32) {
    let mut f = std::fs::File::create(path).unwrap();
    use std::io::Write;
    f.write_all(&idx::encode_images(count as usize, 28, 28, &[]))
        .unwrap();
    f.set_len(16 + count as u64 * 784).unwrap();
}

// 10 and 14. The test set is bounded; a huge file's count mismatch costs no memory.
#[test]
fn a_huge_test_set_or_a_mismatched_huge_file_is_refused_before_it_is_read() {
    let (tmp, data) = data_copy();
    std::fs::remove_file(data.join("t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::remove_file(data.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    sparse_images(&data.join("t10k-images-idx3-ubyte"), 1_500_000);
    std::fs::write(
        data.join("t10k-labels-idx1-ubyte"),
        idx::encode_labels(&vec![3; 1_500_000]),
    )
    .unwrap();
    // 1 GB of address space: the 1.2 GB test file can only be refused, never read.
    let line = format!(
        "ulimit -v 1000000; exec {BIN} --cpu --limit 256 --epochs 1 --threads 1 --data-dir {}",
        s(&data)
    );
    let out = Command::new("bash").args(["-c", &line]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        ours(&err)[0].contains("holds 1500000 test images") && ours(&err)[0].contains("at most"),
        "{err}"
    );
    // A 1.9 GB training file whose labels say 10,000: refused from the headers.
    let (_t2, data2) = data_copy();
    std::fs::remove_file(data2.join("train-images-idx3-ubyte.gz")).unwrap();
    sparse_images(&data2.join("train-images-idx3-ubyte"), 2_400_000);
    let line = format!(
        "ulimit -v 1000000; exec {BIN} --cpu --epochs 1 --threads 1 --data-dir {}",
        s(&data2)
    );
    let out = Command::new("bash").args(["-c", &line]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        ours(&err)[0].contains("10000 labels") && ours(&err)[0].contains("2400000 images"),
        "{err}"
    );
    // A healthy run says how much of its memory the test set holds.
    let (code, out, err) = gpu_train(&["--cpu", "--limit", "256", "--epochs", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("7.8 MB test)"), "{out}");
    drop(tmp);
}

// 11. An error line is one write, so two ranks' lines cannot interleave.
#[test]
fn an_error_line_is_written_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-s",
            "1000",
            "-e",
            "trace=write",
            "-e",
            "signal=none",
            "-o",
            s(&log),
            BIN,
        ])
        .args(["--cpu", "--limit", "100", "--epochs", "1", "--lr", "-1"])
        .output();
    let Ok(out) = out else {
        panic!("strace is needed (apt-get install strace; scripts/test.sh installs it)");
    };
    assert_eq!(out.status.code(), Some(2));
    let writes: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("write(2,"))
        .map(str::to_string)
        .collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert!(
        writes[0].contains("gpu-train: ") && writes[0].contains("\\n\""),
        "{writes:#?}"
    );
}

// 12. Flags with bounds and honest messages.
#[test]
fn flags_are_bounded_and_their_refusals_say_what_is_wrong() {
    for v in ["-1", "NaN", "inf", "0"] {
        for flag in ["--peak-tflops", "--peak-tbs"] {
            let (code, _, err) = gpu_train(&["bench", "--cpu-only", "--epochs", "1", flag, v]);
            assert_eq!(code, 2, "{flag} {v}: {err}");
            assert!(ours(&err)[0].contains("a card's peak"), "{err}");
        }
    }
    for steps in ["0..0", "5..2"] {
        let (code, _, err) = gpu_train(&[
            "--cpu",
            "--epochs",
            "1",
            "--trace",
            "/tmp/x.json",
            "--trace-steps",
            steps,
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(
            ours(&err)[0].contains("B must be more than A") && !err.contains("expected A..B"),
            "{err}"
        );
    }
    // Steps past the run's end: the trace would hold none.
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--replicas",
        "2",
        "--limit",
        "640",
        "--epochs",
        "1",
        "--trace",
        "/tmp/x.json",
        "--trace-steps",
        "1000..1002",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(ours(&err)[0].contains("the trace would hold none"), "{err}");
    let (code, _, err) = gpu_train(&["--epochs", "1", "--kernels", "reg8x4_f16"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("reads f16: pass --precision f16"),
        "{err}"
    );
}

#[test]
fn a_test_set_gzip_bomb_does_not_suggest_limit() {
    let (tmp, data) = data_copy();
    // A few KiB of gzip claiming 200,000 test images (157 MB).
    let mut bomb = idx::encode_images(200_000, 28, 28, &[]);
    bomb.resize(16 + (4 << 20), 0);
    std::fs::write(data.join("t10k-images-idx3-ubyte.gz"), gzip(&bomb)).unwrap();
    let labels = idx::encode_labels(&vec![1; 200_000]);
    std::fs::write(data.join("t10k-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
    let (code, _, err) = quick_run(&data);
    assert_eq!(code, 2, "{err}");
    assert!(
        ours(&err)[0].contains("gzip bomb") && !err.contains("--limit"),
        "{err}"
    );
    drop(tmp);
}

#[test]
#[cfg(feature = "mpi")]
fn too_many_threads_under_mpi_name_the_rank_and_the_affinity() {
    let (code, _, err) = {
        let out = Command::new("taskset")
            .args([
                "-c",
                "0",
                BIN,
                "--mpi",
                "--cpu",
                "--threads",
                "2",
                "--limit",
                "100",
                "--epochs",
                "1",
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2), "{err}");
    let line = ours(&err)[0];
    assert!(
        line.starts_with("gpu-train: rank 0 of 1: --threads 2"),
        "{err}"
    );
    assert!(line.contains("CPU affinity"), "{err}");
}

/// A safetensors file with `header` (JSON) and `data` bytes.
fn safetensors_with(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn a_weights_file_naming_a_tensor_twice_is_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::init(1);
    let mut data = Vec::new();
    let mut entries = Vec::new();
    for (name, shape, values) in m.tensors() {
        let start = data.len();
        data.extend_from_slice(bytemuck::cast_slice(values));
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    // output.bias twice: the second one pointing at the first tensor's start.
    entries
        .push("\"output.bias\":{\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":[0,40]}".into());
    let path = dir.path().join("twice.safetensors");
    std::fs::write(
        &path,
        safetensors_with(&format!("{{{}}}", entries.join(",")), &data),
    )
    .unwrap();
    for args in [
        vec!["predict", s(&path), "--index", "0"],
        vec!["explain", "--weights", s(&path)],
        vec![
            "--cpu",
            "--epochs",
            "1",
            "--limit",
            "100",
            "--init",
            s(&path),
        ],
    ] {
        let (code, _, err) = gpu_train(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            ours(&err)[0].contains("names 'output.bias' twice"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_forged_loss_scale_is_refused_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("sd");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--precision",
        "f16",
        "--limit",
        "256",
        "--epochs",
        "1",
        "--snapshot-dir",
        s(&sd),
    ]);
    assert_eq!(code, 0, "{err}");
    let path = SnapshotDir::open(&sd, 3)
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    let (model, mut state) = checkpoint::load(&path).unwrap();
    state.loss_scale = Some((f32::MAX, 0));
    std::fs::write(&path, checkpoint::encode(&model, &state).unwrap()).unwrap();
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--precision",
        "f16",
        "--limit",
        "256",
        "--epochs",
        "2",
        "--snapshot-dir",
        s(&sd),
        "--resume",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(ours(&err)[0].contains("loss scale"), "{err}");
}

// 13. --nic keeps only what the traced steps need.
#[test]
fn nic_samples_cover_the_traced_steps_only() {
    // Traffic on loopback for the whole run, so the counters change every millisecond.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let noise = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = sock.send_to(&[0u8; 1000], to);
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--replicas",
        "2",
        "--limit",
        "2560",
        "--epochs",
        "3",
        "--nic",
        "lo",
        "--trace",
        s(&trace),
        "--trace-steps",
        "0..2",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().unwrap();
    assert_eq!(code, 0, "{err}");
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let last_span = events
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let last_sample = events
        .iter()
        .filter(|e| e["ph"] == "C")
        .map(|e| e["ts"].as_f64().unwrap())
        .fold(0.0, f64::max);
    // 60 steps of training follow the 2 traced ones; the samples stop with the traced steps.
    assert!(
        last_sample < last_span + 50_000.0,
        "NIC samples run to {last_sample} µs, the traced steps end at {last_span} µs"
    );
    assert!(last_sample > 0.0, "no NIC samples at all");
}

// 14. A file that was never a snapshot is not called damaged.
#[test]
fn resuming_from_a_file_that_is_no_snapshot_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "100",
        "--resume",
        s(&passwd),
    ]);
    assert_eq!(code, 2, "{err}");
    let line = ours(&err)[0];
    assert!(
        line.contains("not a gpu-train snapshot") && !line.contains("damaged"),
        "{err}"
    );
    // A real snapshot cut short is still called damaged.
    let sd = dir.path().join("sd");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "100",
        "--snapshot-dir",
        s(&sd),
    ]);
    assert_eq!(code, 0, "{err}");
    let snap = SnapshotDir::open(&sd, 3)
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    let bytes = std::fs::read(&snap).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "100",
        "--resume",
        s(&cut),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(ours(&err)[0].contains("damaged"), "{err}");
}
