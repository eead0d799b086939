//! Snapshots: exact resume (CPU and GPU), a crash test with SIGKILL, and every kind of bad
//! snapshot or failing disk giving a clear error with nothing lost.

mod common;
use common::gpu_train;
use gpu_train::checkpoint::{self, Position, TrainState};
use gpu_train::snapshots::SnapshotDir;
use gpu_train::cpu::engine::CpuEngine;
use gpu_train::data::{self, DataSplit};
use gpu_train::engine::Engine;
use gpu_train::gpu::engine::state::GpuEngine;
use gpu_train::gpu::buffers::GpuOptions;
use gpu_train::model::Model;
use gpu_train::parallel::ring::Ring;
use gpu_train::train::{self, Snapshots, Start};
use gpu_train::train::report::Quiet;
use gpu_train::config::TrainConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn small(n: usize) -> DataSplit {
    let mut d = data::load_dir(&data::bundled_dir()).unwrap();
    d.train = d.train.take(n);
    d.test = d.test.take(500);
    d
}

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 64,
        lr: 0.1,
        seed: 5,
    }
}

/// Makes the engines of a run (one, or several data-parallel replicas) from given weights.
type Make<'a> = &'a dyn Fn(&Model) -> Vec<Box<dyn Engine>>;

/// Joins `engines`: one fused engine, or data-parallel replicas with the in-process ring.
fn join(engines: &mut [Box<dyn Engine>]) -> gpu_train::train::replicas::Replicas<'_> {
    let n = engines.len();
    let list: Vec<&mut dyn Engine> = engines
        .iter_mut()
        .map(|e| -> &mut dyn Engine { e.as_mut() })
        .collect();
    if n == 1 {
        gpu_train::train::replicas::Replicas::one(list.into_iter().next().unwrap())
    } else {
        gpu_train::train::replicas::Replicas::data_parallel(list, Box::new(Ring::new(n)), false, gpu_train::model::HIDDEN).unwrap()
    }
}

/// Trains from scratch with snapshots every `every` steps; returns the final model.
fn run_with_snapshots(
    make: Make,
    data: &DataSplit,
    dir: &SnapshotDir,
    every: usize,
    epochs: usize,
) -> Model {
    let mut engines = make(&Model::init(5));
    let snaps = Snapshots { dir, every };
    train::train_from(
        &mut join(&mut engines),
        data,
        &cfg(epochs),
        Start::FRESH,
        Some(snaps),
        &mut Quiet,
    )
    .unwrap();
    engines[0].model().unwrap()
}

/// Resumes from `path` in fresh engines made by `make`, to the end; returns the final model.
fn resume(make: Make, data: &DataSplit, path: &Path, epochs: usize) -> Model {
    let (model, state) = checkpoint::load(path).unwrap();
    checkpoint::check_data(&state, &data.train, path).unwrap();
    let mut engines = make(&model);
    assert_eq!(
        state.replicas,
        engines.len(),
        "the snapshot records the replicas"
    );
    let start = Start {
        at: state.next,
        global_step: state.global_step,
        scaler: None,
    };
    train::train_from(
        &mut join(&mut engines),
        data,
        &cfg(epochs),
        start,
        None,
        &mut Quiet,
    )
    .unwrap();
    engines[0].model().unwrap()
}

fn check_resume_is_exact(make: Make, data: &DataSplit) {
    let dir = tempfile::tempdir().unwrap();
    let snaps = SnapshotDir::open(dir.path(), 100).unwrap();
    // 700 images: 11 steps of 64 an epoch (the last short); snapshots every 4 steps fall
    // mid-epoch. With 2 replicas of 64: 6 global steps an epoch, every 4 steps too.
    let uninterrupted = run_with_snapshots(make, data, &snaps, 4, 3);
    let all = snaps.list().unwrap();
    assert!(all.len() >= 5, "{all:?}");
    let mut mid_epoch = 0;
    for (_, path) in &all {
        let (_, state) = checkpoint::load(path).unwrap();
        mid_epoch += (state.next.step != 0) as usize;
        if state.next.epoch > 3 {
            continue;
        }
        let resumed = resume(make, data, path, 3);
        assert!(
            resumed == uninterrupted,
            "resuming from {} changed the final weights (max diff {})",
            path.display(),
            resumed.max_abs_diff(&uninterrupted)
        );
    }
    assert!(
        mid_epoch >= 2,
        "snapshots in the middle of an epoch were exercised"
    );
}

#[test]
fn cpu_resume_ends_with_bit_identical_weights() {
    let data = small(700);
    check_resume_is_exact(
        &|m: &Model| vec![Box::new(CpuEngine::new(m.clone(), 1)) as Box<dyn Engine>],
        &data,
    );
}

#[test]
fn cpu_replicas_resume_ends_with_bit_identical_weights() {
    let data = small(700);
    check_resume_is_exact(
        &|m: &Model| {
            (0..2)
                .map(|_| Box::new(CpuEngine::new(m.clone(), 1)) as Box<dyn Engine>)
                .collect()
        },
        &data,
    );
}

fn gpu_engines(m: &Model, data: &DataSplit, n: usize) -> Vec<Box<dyn Engine>> {
    (0..n)
        .map(|_| {
            let g = common::gpu("gpu").unwrap();
            Box::new(GpuEngine::new(g, m, GpuOptions::default(), &data.train).unwrap())
                as Box<dyn Engine>
        })
        .collect()
}

#[test]
fn gpu_resume_ends_with_bit_identical_weights() {
    if common::gpu("gpu_resume_ends_with_bit_identical_weights").is_none() {
        return;
    }
    let data = small(700);
    // The GPU kernels sum in a fixed order and use no atomics, so on one adapter a resumed run
    // repeats the uninterrupted one exactly.
    check_resume_is_exact(&|m: &Model| gpu_engines(m, &data, 1), &data);
}

#[test]
fn gpu_replicas_resume_ends_with_bit_identical_weights() {
    if common::gpu("gpu_replicas_resume_ends_with_bit_identical_weights").is_none() {
        return;
    }
    let data = small(700);
    check_resume_is_exact(&|m: &Model| gpu_engines(m, &data, 2), &data);
}

fn some_snapshot() -> (Model, TrainState) {
    let state = TrainState {
        next: Position { epoch: 2, step: 3 },
        global_step: 20,
        seed: 9,
        lr: 0.1,
        batch_size: 64,
        replicas: 2,
        train_len: 700,
        train_fingerprint: small(700).train.fingerprint(),
        loss_scale: Some((32768.0, 17)),
        trained_on: Some("CPU, separated step".into()),
    };
    (Model::init(3), state)
}

#[test]
fn encode_decode_round_trip_keeps_every_bit() {
    let (model, state) = some_snapshot();
    let bytes = checkpoint::encode(&model, &state).unwrap();
    let (m2, s2) = checkpoint::decode(&bytes, Path::new("x")).unwrap();
    assert!(m2 == model);
    assert_eq!(s2, state);
    // A PyTorch user sees the conventional names and shapes.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("hidden.weight").unwrap().shape(), &[128, 784]);
    assert_eq!(st.tensor("output.weight").unwrap().shape(), &[10, 128]);
    assert_eq!(st.tensor("hidden.bias").unwrap().shape(), &[128]);
    assert_eq!(st.tensor("output.bias").unwrap().shape(), &[10]);
}

#[test]
fn any_flipped_byte_is_detected() {
    let (model, state) = some_snapshot();
    let bytes = checkpoint::encode(&model, &state).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Every byte of the length prefix and the JSON header, and a spread of tensor bytes.
    let positions: Vec<usize> = (0..header)
        .chain((header..bytes.len()).step_by(397))
        .chain([bytes.len() - 1])
        .collect();
    for &i in &positions {
        for flip in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            let r = std::panic::catch_unwind(|| {
                checkpoint::decode(&bad, Path::new("snap.safetensors"))
            });
            let r = r.unwrap_or_else(|_| panic!("decoding with byte {i} flipped panicked"));
            assert!(r.is_err(), "byte {i} ^ {flip:#x} was not detected");
            let msg = r.unwrap_err().to_string();
            assert!(msg.starts_with("snap.safetensors: "), "{msg}");
        }
    }
    // A truncated file too.
    assert!(checkpoint::decode(&bytes[..bytes.len() - 1], Path::new("s")).is_err());
}

#[test]
fn snapshot_of_another_shape_or_data_set_is_refused() {
    // Another shape: a 64-neuron hidden layer, with otherwise valid metadata.
    let (_, state) = some_snapshot();
    let good = checkpoint::encode(&Model::init(1), &state).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&good).unwrap();
    let meta = header.metadata().clone().unwrap();
    let w = vec![0u8; 64 * 784 * 4];
    let b = vec![0u8; 64 * 4];
    let w2 = vec![0u8; 10 * 64 * 4];
    let b2 = vec![0u8; 40];
    let view = |shape: Vec<usize>, d: &'static [u8]| {
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, d).unwrap()
    };
    let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
    let other = safetensors::serialize(
        vec![
            ("hidden.weight", view(vec![64, 784], leak(w))),
            ("hidden.bias", view(vec![64], leak(b))),
            ("output.weight", view(vec![10, 64], leak(w2))),
            ("output.bias", view(vec![10], leak(b2))),
        ],
        Some(meta),
    )
    .unwrap();
    let e = checkpoint::decode(&other, Path::new("other.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("different model") && e.contains("[64, 784]"),
        "{e}"
    );

    // Another data set: same shape, but taken training on 700 images, resumed on 600.
    let path = Path::new("snap.safetensors");
    let e = checkpoint::check_data(&state, &small(600).train, path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("different data set") && e.contains("--data-dir"),
        "{e}"
    );
    checkpoint::check_data(&state, &small(700).train, path).unwrap();
}

#[test]
fn unwritable_snapshot_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    // A folder below a regular file cannot exist, even for root.
    let e = SnapshotDir::open(&file.join("snaps"), 3)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot create the snapshot folder") && e.contains("--snapshot-dir"),
        "{e}"
    );
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "640",
        "--snapshot-dir",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("gpu-train: ") && err.contains("--snapshot-dir"),
        "{err}"
    );
}

/// Every file in `dir` with its bytes, but the lock file (it holds the last run's pid).
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != gpu_train::snapshots::LOCK_FILE)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Trains one epoch with snapshots into `dir`; returns what the folder then holds.
fn one_good_epoch(dir: &str) -> BTreeMap<String, Vec<u8>> {
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "640",
        "--snapshot-dir",
        dir,
    ]);
    assert_eq!(code, 0, "{err}");
    contents(Path::new(dir))
}

#[test]
fn full_disk_leaves_previous_snapshots_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let before = one_good_epoch(d);
    assert_eq!(before.len(), 1);
    // A file-size limit of 100 KiB (the snapshot is 400 KB): writes fail with EFBIG, as on a
    // full disk. SIGXFSZ is ignored so the write returns an error instead of killing us.
    let script = format!(
        "trap '' XFSZ; ulimit -f 200; exec '{}' --cpu --epochs 2 --limit 640 --snapshot-dir '{d}' --resume",
        env!("CARGO_BIN_EXE_gpu-train")
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write the snapshot")
            && err.contains("previous snapshots are untouched"),
        "{err}"
    );
    assert_eq!(
        contents(dir.path()),
        before,
        "the folder changed: a partial file was left or a snapshot was touched"
    );
}

#[test]
fn divergence_stops_with_a_message_and_keeps_the_last_good_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let before = one_good_epoch(d);
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "3",
        "--limit",
        "640",
        "--snapshot-dir",
        d,
        "--snapshot-every",
        "2",
        "--resume",
        "--lr",
        "1e30",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("training diverged") && err.contains("lower --lr"),
        "{err}"
    );
    assert_eq!(contents(dir.path()), before);
}

/// The highest step among the snapshot files in `dir` (0 if none), read without locking it.
fn latest_step(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("snapshot-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Starts a run as a child process, kills it with SIGKILL after varying delays (so some kills land
/// while a snapshot is being written: one is written every 2 steps), resumes until it finishes,
/// and compares the final weights with an uninterrupted run's. Between kills, every snapshot in
/// the folder must load: no partial or corrupt file is ever there under a snapshot's name.
#[test]
fn killed_runs_resume_to_the_same_weights() {
    let exe = env!("CARGO_BIN_EXE_gpu-train");
    let args = |d: &str| -> Vec<String> {
        [
            "--cpu",
            "--epochs",
            "3",
            "--snapshot-every",
            "2",
            "--keep",
            "2",
            "--snapshot-dir",
            d,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let clean = tempfile::tempdir().unwrap();
    let st = Command::new(exe)
        .args(args(clean.path().to_str().unwrap()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (want, _) = checkpoint::load(
        &SnapshotDir::open(clean.path(), 2)
            .unwrap()
            .latest()
            .unwrap()
            .unwrap(),
    )
    .unwrap();

    let crashy = tempfile::tempdir().unwrap();
    let d = crashy.path().to_str().unwrap().to_string();
    let (mut kills, mut finished) = (0, false);
    for attempt in 0..40 {
        let mut a = args(&d);
        if attempt > 0
            && SnapshotDir::open(crashy.path(), 2)
                .unwrap()
                .latest()
                .unwrap()
                .is_some()
        {
            a.push("--resume".into());
        }
        let mut child = Command::new(exe)
            .args(&a)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Kill once the run has gone a fifth of the way further (94 of its 471 steps), plus a
        // few milliseconds that differ from kill to kill so the kill lands at different points
        // of a step or a snapshot write: progress-based, so the test kills several times on a
        // fast machine and a loaded one alike. (The folder is listed directly: opening it as a
        // SnapshotDir would take the running child's lock.)
        let before = latest_step(crashy.path());
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if latest_step(crashy.path()) >= before + 94 {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        std::thread::sleep(std::time::Duration::from_millis(attempt % 4));
        match exited.or(child.try_wait().unwrap()) {
            Some(status) => {
                let out = child.wait_with_output().unwrap();
                assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
        for (_, path) in SnapshotDir::open(crashy.path(), 2).unwrap().list().unwrap() {
            checkpoint::load(&path)
                .unwrap_or_else(|e| panic!("after a kill, a damaged snapshot was left: {e}"));
        }
    }
    assert!(finished, "the run never finished");
    assert!(
        kills >= 2,
        "only {kills} kills landed: the run is too fast for this test"
    );
    eprintln!("{kills} kills (SIGKILL) before the run finished");
    let (got, state) = checkpoint::load(
        &SnapshotDir::open(crashy.path(), 2)
            .unwrap()
            .latest()
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state.next, Position { epoch: 4, step: 0 });
    assert!(
        got == want,
        "after {kills} kills the final weights differ (max diff {})",
        got.max_abs_diff(&want)
    );
}

/// Writes a w×h 8-bit grey PNG.
fn write_png(path: &Path, w: u32, h: u32, pixels: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .unwrap()
        .write_image_data(pixels)
        .unwrap();
}

#[test]
fn predict_prints_the_softmax_table_for_test_images_and_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "2",
        "--limit",
        "3000",
        "--snapshot-dir",
        d,
    ]);
    assert_eq!(code, 0, "{err}");
    let snap = SnapshotDir::open(dir.path(), 3)
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    // Test image 0 drawn into a PNG: the PNG path must give the same logits as the index path.
    let test = data::load_dir(&data::bundled_dir()).unwrap().test;
    let png_path = dir.path().join("digit.png");
    write_png(&png_path, 28, 28, test.image(0));
    let (code, out, err) = gpu_train(&[
        "predict",
        snap.to_str().unwrap(),
        "--index",
        "0",
        "--png",
        png_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("test image 0 (true class 7)")
            && out.contains("probability")
            && out.contains("← predicted"),
        "{out}"
    );
    let tables: Vec<&str> = out.split("  class").skip(1).collect();
    assert_eq!(tables.len(), 2, "{out}");
    let numbers = |t: &str| {
        t.lines()
            .skip(1)
            .take(10)
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        numbers(tables[0]),
        numbers(tables[1]),
        "PNG and IDX copies of one image disagree"
    );
    // A PNG of the wrong size is refused with the reason.
    let big = dir.path().join("big.png");
    write_png(&big, 32, 32, &[0u8; 1024]);
    let (code, _, err) = gpu_train(&[
        "predict",
        snap.to_str().unwrap(),
        "--png",
        big.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("32x32") && err.contains("28x28"), "{err}");
}

/// A run trained with a non-default batch size resumes without repeating the flag: the
/// engines are built from the snapshot's settings, not from the raw flags (CPU and GPU).
#[test]
fn resume_keeps_a_non_default_batch_size_on_cpu_and_gpu() {
    let mut paths = vec![vec!["--cpu"]];
    if common::gpu("resume_keeps_a_non_default_batch_size").is_some() {
        paths.push(vec![]);
    }
    for path in paths {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let mut first = path.clone();
        first.extend([
            "--limit",
            "300",
            "--batch-size",
            "128",
            "--epochs",
            "1",
            "--snapshot-dir",
            d,
        ]);
        let (code, _, err) = gpu_train(&first);
        assert_eq!(code, 0, "{path:?}: {err}");
        let mut again = path.clone();
        again.extend([
            "--limit",
            "300",
            "--epochs",
            "2",
            "--snapshot-dir",
            d,
            "--resume",
        ]);
        let (code, out, err) = gpu_train(&again);
        assert_eq!(code, 0, "{path:?}: {err}");
        assert!(out.contains("batch size 128"), "{path:?}: {out}");
        // Asking for another batch size on resume is refused, not silently ignored.
        again.extend(["--batch-size", "64"]);
        let (code, _, err) = gpu_train(&again);
        assert_eq!(code, 2, "{path:?}: {err}");
        assert!(err.contains("trained with batch size 128"), "{err}");
    }
}

/// A snapshot resumed on another engine (or step) says the run will go on correctly but not
/// bit for bit as the first would have: before, a CPU snapshot resumed on a GPU said nothing.
#[test]
fn a_resume_on_another_engine_says_it_is_not_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    let s = s.to_str().unwrap();
    let base = ["--limit", "640", "--epochs", "2", "--keep", "100"];
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
            .args(base)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{extra:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["--cpu", "--snapshot-dir", s, "--snapshot-every", "4"]);
    let dir_list = gpu_train::snapshots::SnapshotDir::open(std::path::Path::new(s), 100).unwrap();
    let first = dir_list.list().unwrap()[0].1.clone();
    drop(dir_list);
    let first = first.to_str().unwrap();
    let resumed = |extra: &[&str]| {
        let d = tempfile::tempdir().unwrap();
        let d2 = d.path().join("r");
        let mut a = vec!["--resume", first, "--snapshot-dir", d2.to_str().unwrap()];
        a.extend_from_slice(extra);
        run(&a)
    };
    // The same engine and step: no note.
    let out = resumed(&["--cpu"]);
    assert!(!out.contains("not be bit-identical"), "{out}");
    // Another step (separated, through the all-reduce seam) on the same CPU: a note.
    let out = resumed(&["--cpu", "--replicas", "1"]);
    assert!(
        out.contains("trained on CPU, fused step; this run goes on on CPU, separated step"),
        "{out}"
    );
    if gpu_train::gpu::context::Gpu::for_tests().is_some() {
        let out = resumed(&["--device", "0"]);
        assert!(
            out.contains(
                "note: the snapshot was trained on CPU, fused step; this run goes on on GPU"
            ) && out.contains("not be bit-identical"),
            "{out}"
        );
    }
}
