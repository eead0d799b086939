//! `--tensorboard DIR`: the event file is read back by TensorBoard's own reader (the
//! `tensorboard` Python package's `EventAccumulator`, which checks every record's CRC-32C),
//! and its scalars are the `--metrics` records of the same run, step for step. And the metrics
//! file's first line says what produced it.
//!
//! The reader: `$GPU_TRAIN_TEST_PYTHON` (scripts/test.sh installs tensorboard into a venv
//! under target/ and points this at its python), else `python3`. Without it the test says it
//! skipped; under CI (CI=true) it fails.

mod common;
use std::path::Path;

/// Prints every scalar of the event files in a folder as JSON: the file version the reader
/// saw and, per tag, [step, value, wall_time] in the file's order.
const READ_EVENTS: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
ea.Reload()
out = {"file_version": ea.file_version, "scalars": {}}
for tag in ea.Tags()["scalars"]:
    out["scalars"][tag] = [[s.step, s.value, s.wall_time] for s in ea.Scalars(tag)]
print(json.dumps(out))
"#;

/// The python that has the tensorboard package, or why there is none.
fn reader() -> Result<String, String> {
    let python = std::env::var("GPU_TRAIN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args([
            "-c",
            "import tensorboard.backend.event_processing.event_accumulator",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => Ok(python),
        Ok(o) => Err(format!(
            "{python} has no tensorboard package ({}); scripts/test.sh installs it into target/tb-venv and sets GPU_TRAIN_TEST_PYTHON",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        )),
        Err(e) => Err(format!("cannot run {python}: {e}")),
    }
}

fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
        .args(args)
        .args(["--data-dir", data])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The (step, value) pairs of `tag` as the reader gave them, values as f32.
fn series(events: &serde_json::Value, tag: &str) -> Vec<(u64, f32)> {
    events["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no scalar {tag} in the event file: {events}"))
        .iter()
        .map(|s| (s[0].as_u64().unwrap(), s[1].as_f64().unwrap() as f32))
        .collect()
}

/// `key` of each record of `kind`, with its global step, as TensorBoard stores it (an f32).
fn from_metrics(records: &[serde_json::Value], kind: &str, key: &str) -> Vec<(u64, f32)> {
    records
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("no {key}: {r}"));
            (r["global_step"].as_u64().unwrap(), v as f32)
        })
        .collect()
}

#[test]
fn tensorboard_reads_the_runs_own_metrics() {
    let python = match reader() {
        Ok(p) => p,
        Err(why) => return common::skip("tensorboard_reads_the_runs_own_metrics", &why),
    };
    let dir = tempfile::tempdir().unwrap();
    // Two CPU replicas, so there is an all-reduce to count and to time.
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "--cpu",
            "--replicas",
            "2",
            "--epochs",
            "2",
            "--limit",
            "2000",
            "--metrics",
            "m.jsonl",
            "--metrics-every",
            "4",
            "--tensorboard",
            "tb",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("tb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one event file: {files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let rest = name
        .strip_prefix("events.out.tfevents.")
        .unwrap_or_else(|| panic!("{name}"));
    let (secs, host) = rest.split_once('.').unwrap();
    assert!(secs.parse::<u64>().is_ok() && !host.is_empty(), "{name}");
    // The first record is the file version.
    let bytes = std::fs::read(&files[0]).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let first = &bytes[12..12 + len];
    assert!(
        first.windows(13).any(|w| w == b"brain.Event:2"),
        "{first:?}"
    );

    let out = std::process::Command::new(&python)
        .args(["-c", READ_EVENTS])
        .arg(dir.path().join("tb"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(events["file_version"], 2.0, "{events}");
    let records = gpu_train::network::metrics::read(&dir.path().join("m.jsonl")).unwrap();

    // Every metrics window and every epoch, at the same global steps, to f32 precision.
    let steps = from_metrics(&records, "step", "train_loss");
    assert!(steps.len() >= 4, "{records:?}");
    for (tag, kind, key) in [
        ("train/loss", "step", "train_loss"),
        ("train/accuracy", "step", "train_accuracy"),
        ("bytes/staged", "step", "staged_bytes"),
        ("bytes/allreduce_sent", "step", "allreduce_sent_bytes"),
        ("bytes/read_back", "step", "readback_bytes"),
        ("epoch/train_loss", "epoch", "train_loss"),
        ("epoch/train_accuracy", "epoch", "train_accuracy"),
        ("test/loss", "epoch", "test_loss"),
        ("test/accuracy", "epoch", "test_accuracy"),
        ("epoch/time_s", "epoch", "epoch_time_s"),
        ("epoch/staged_bytes", "epoch", "staged_bytes"),
        (
            "epoch/allreduce_sent_bytes",
            "epoch",
            "allreduce_sent_bytes",
        ),
        ("epoch/read_back_bytes", "epoch", "readback_bytes"),
    ] {
        assert_eq!(
            series(&events, tag),
            from_metrics(&records, kind, key),
            "{tag} against the metrics' {key}"
        );
    }
    let sent = series(&events, "bytes/allreduce_sent");
    assert!(
        sent.iter().all(|&(_, b)| b > 0.0),
        "two replicas all-reduce: {sent:?}"
    );
    // The epoch's speed is its images over its training time; the all-reduce time is the
    // data-parallel step's, once an epoch.
    let times = from_metrics(&records, "epoch", "epoch_time_s");
    let speed = series(&events, "epoch/images_per_s");
    assert_eq!(speed.len(), 2);
    for ((step, v), (_, t)) in speed.iter().zip(&times) {
        let want = 2000.0 / *t as f64;
        assert!(
            ((*v as f64) - want).abs() <= 1e-4 * want,
            "images/s at step {step}: {v}, the epoch's 2000 images in {t} s are {want}"
        );
    }
    let sync = series(&events, "epoch/allreduce_s");
    assert_eq!(
        sync.iter().map(|s| s.0).collect::<Vec<_>>(),
        times.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert!(
        sync.iter().zip(&times).all(|(s, t)| s.1 > 0.0 && s.1 < t.1),
        "{sync:?}"
    );

    // The run record first, then records that say when they were written.
    let run = &records[0];
    assert_eq!(run["kind"], "run", "{run}");
    assert_eq!(run["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        run["commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{run}"
    );
    assert!(
        run["engine"].as_str().is_some_and(|e| e.starts_with("CPU")),
        "{run}"
    );
    assert!(
        run["run_config"].as_str().unwrap().contains("replicas: 2"),
        "{run}"
    );
    assert_eq!(run["global_step"], 0);
    let started = run["started_unix_s"].as_u64().unwrap();
    assert_eq!(
        run["started_utc"],
        gpu_train::network::metrics::rfc3339_utc(started)
    );
    assert_eq!(records.iter().filter(|r| r["kind"] == "run").count(), 1);
    for r in &records[1..] {
        let t = r["unix_time"]
            .as_f64()
            .unwrap_or_else(|| panic!("no unix_time: {r}"));
        assert!(t >= started as f64 && t < started as f64 + 3600.0, "{r}");
    }
    let wall = events["scalars"]["train/loss"][0][2].as_f64().unwrap();
    assert!(
        wall >= started as f64,
        "event wall_time {wall}, run started {started}"
    );
}

/// `--tensorboard` names a folder: a file there is refused before training, and the folder
/// is made when missing.
#[test]
fn tensorboard_wants_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "x").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "--cpu",
            "--epochs",
            "1",
            "--limit",
            "128",
            "--tensorboard",
            "a-file",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tensorboard a-file: not a folder"), "{err}");
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "--cpu",
            "--epochs",
            "1",
            "--limit",
            "128",
            "--tensorboard",
            "new/tb",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let made = std::fs::read_dir(dir.path().join("new/tb"))
        .unwrap()
        .count();
    assert_eq!(made, 1);
}
