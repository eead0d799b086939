//! The network view: traffic counted per step, the Chrome-trace timeline, the metrics file and
//! its pictures, the link-utilisation picture and projection, the all-reduce benchmark, and lost,
//! damaged and slow messages injected, each stopping (or slowing) the run as the chapter says,
//! with a resume that ends where an undisturbed run ends.

mod common;
use common::gpu_train;
use gpu_train::checkpoint;
use gpu_train::snapshots::SnapshotDir;
use std::path::Path;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_trace_of_two_gpu_replicas_opens_as_trace_events_with_one_track_each() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    let mut args = vec![
        "--limit",
        "320",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--trace",
        trace.to_str().unwrap(),
        "--trace-steps",
        "1..4",
    ];
    let gpu = common::gpu("a_trace_of_two_gpu_replicas");
    let timestamps = gpu
        .as_ref()
        .is_some_and(|g| g.features.contains(wgpu::Features::TIMESTAMP_QUERY));
    if gpu.is_some() {
        args.extend(["--devices", "0,0"]);
    } else {
        args.extend(["--cpu", "--replicas", "2"]);
    }
    let (code, out, err) = gpu_train(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("trace:"), "{out}");
    let doc = json(&trace);
    assert_eq!(doc["otherData"]["clock"], "host");
    let events = doc["traceEvents"].as_array().unwrap();
    let spans: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    // One track per replica, named, and where the adapter times itself one per replica's GPU,
    // with its two passes as the GPU timed them.
    let tracks: std::collections::BTreeSet<u64> =
        spans.iter().map(|e| e["tid"].as_u64().unwrap()).collect();
    if timestamps {
        assert_eq!(tracks, [0, 1, 1000, 1001].into());
        assert!(spans
            .iter()
            .any(|e| e["name"] == "GPU: hidden layer's gradient"
                && e["args"]["clock"] == "GPU timestamps"));
        // No GPU span ends after the all-reduce that consumes its result has begun: each is
        // drawn at the earliest it can have run (anchored at the host's submission), so it
        // lies before the host's wait for it ended. (Before, on lavapipe, 108 of 160 did.)
        let end_of = |e: &serde_json::Value| e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap();
        let mut checked = 0;
        for (gpu_name, consumer) in [
            (
                "GPU: forward, loss, output layer's gradient",
                "all-reduce: output layer",
            ),
            ("GPU: hidden layer's gradient", "all-reduce: hidden layer"),
        ] {
            for g in spans.iter().filter(|e| e["name"] == gpu_name) {
                let replica = g["tid"].as_u64().unwrap() - 1000;
                let c = spans
                    .iter()
                    .find(|e| {
                        e["name"] == consumer
                            && e["tid"].as_u64() == Some(replica)
                            && e["args"]["step"] == g["args"]["step"]
                    })
                    .unwrap_or_else(|| panic!("no {consumer} for {g}"));
                assert!(
                    end_of(g) <= c["ts"].as_f64().unwrap() + 1e-3,
                    "{gpu_name} ends after {consumer} begins: {g} / {c}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 2 * 2 * 3, "{checked} GPU spans checked");
    } else {
        assert_eq!(tracks, [0, 1].into());
    }
    assert!(events
        .iter()
        .any(|e| e["ph"] == "M" && e["args"]["name"] == "replica 1"));
    for name in [
        "stage + record forward/backward",
        "wait for gradient: hidden layer",
        "all-reduce: hidden layer",
        "all-reduce: output layer",
        "write gradient",
        "update",
    ] {
        assert!(spans.iter().any(|e| e["name"] == name), "no {name:?} span");
    }
    // Only steps 1, 2, 3 are traced; every span has a start and a duration; the all-reduce
    // spans carry their bytes and peers.
    let steps: std::collections::BTreeSet<u64> = spans
        .iter()
        .filter_map(|e| e["args"]["step"].as_u64())
        .collect();
    assert_eq!(steps, [1, 2, 3].into());
    // On each replica's host track the phases follow one another: sorted by start, each span
    // ends before the next begins (one thread does them in turn), and the trace's
    // microseconds keep nanoseconds, so no rounding hides an overlap.
    for track in [0u64, 1] {
        let mut on: Vec<(f64, f64, &str)> = spans
            .iter()
            .filter(|e| e["tid"].as_u64() == Some(track))
            .map(|e| {
                let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
                (ts, ts + dur, e["name"].as_str().unwrap())
            })
            .collect();
        on.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in on.windows(2) {
            assert!(
                w[0].0 <= w[0].1 && w[0].1 <= w[1].0 + 1e-3,
                "track {track}: {:?} overlaps {:?}",
                w[0],
                w[1]
            );
        }
    }
    // Each all-reduce span carries what its replica sent: in a ring of N = 2 each replica
    // sends 2(N−1) = 2 messages, each half of the bucket, so 2(N−1)/N = all of the bucket's
    // FP32 bytes. The buckets, from the chapter's shapes: the hidden layer's 784×128 weights
    // and 128 biases, the output layer's 128×10 and 10.
    let peers = 2u64;
    for (bucket, values) in [
        ("all-reduce: hidden layer", 784 * 128 + 128),
        ("all-reduce: output layer", 128 * 10 + 10),
    ] {
        let ring = 2 * (peers - 1) * 4 * values / peers;
        let of_it: Vec<&&serde_json::Value> =
            spans.iter().filter(|e| e["name"] == bucket).collect();
        // One per replica and traced step.
        assert_eq!(of_it.len(), 2 * 3, "{bucket}");
        for ar in of_it {
            assert_eq!(ar["args"]["peers"], peers, "{ar}");
            assert_eq!(ar["args"]["messages"], 2 * (peers - 1), "{ar}");
            assert_eq!(ar["args"]["bytes_sent"], ring, "{bucket}: {ar}");
            assert_eq!(ar["args"]["bytes_received"], ring, "{bucket}: {ar}");
        }
    }

    // The link view of that trace: a table per step and the two pictures.
    let pics = dir.path().join("net");
    let (code, out, err) = gpu_train(&[
        "network",
        trace.to_str().unwrap(),
        "--link",
        "100gbit",
        "-o",
        pics.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("link busy") && out.contains("GPU waits"),
        "{out}"
    );
    for f in ["link-utilisation.png", "link-utilisation.svg"] {
        assert!(std::fs::metadata(pics.join(f)).unwrap().len() > 1000, "{f}");
    }
    assert!(std::fs::read(pics.join("link-utilisation.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
}

#[test]
fn metrics_count_the_bytes_moved_and_plot_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.jsonl");
    let (code, out, err) = gpu_train(&[
        "--cpu",
        "--replicas",
        "2",
        "--limit",
        "1280",
        "--epochs",
        "2",
        "--metrics",
        m.to_str().unwrap(),
        "--metrics-every",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    let records = gpu_train::network::metrics::read(&m).unwrap();
    let epochs: Vec<_> = records.iter().filter(|r| r["kind"] == "epoch").collect();
    let steps: Vec<_> = records.iter().filter(|r| r["kind"] == "step").collect();
    assert_eq!(epochs.len(), 2);
    assert_eq!(steps.len(), 4, "steps 4, 8 of each 10-step epoch");
    // 10 steps an epoch × 2 buckets × a ring of 2: each replica sends 1 × the gradient a step.
    let per_step = (gpu_train::model::PARAMS * 4) as u64;
    assert_eq!(
        epochs[0]["allreduce_sent_bytes"].as_u64().unwrap(),
        10 * per_step
    );
    assert_eq!(
        steps[0]["allreduce_sent_bytes"].as_u64().unwrap(),
        4 * per_step
    );
    assert!(epochs[1]["test_accuracy"].as_f64().unwrap() > 50.0);
    assert!(out.contains("ring payload 4.1 MB/replica"), "{out}");
    let pics = dir.path().join("plots");
    let (code, _, err) = gpu_train(&["plot", m.to_str().unwrap(), "-o", pics.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for f in [
        "loss-by-epoch",
        "accuracy-by-epoch",
        "loss-by-step",
        "accuracy-by-step",
    ] {
        for ext in ["png", "svg"] {
            assert!(pics.join(format!("{f}.{ext}")).is_file(), "{f}.{ext}");
        }
    }
    // A file that is not metrics is refused with its line.
    std::fs::write(&m, "{\"kind\":\"epoch\"}\nnot json\n").unwrap();
    let (code, _, err) = gpu_train(&["plot", m.to_str().unwrap(), "-o", pics.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn allreduce_bench_reports_nccl_tests_numbers_and_feeds_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("ar.json");
    let (code, out, err) = gpu_train(&[
        "allreduce-bench",
        "--max-bytes",
        "65536",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("busbw"), "{out}");
    let rows = json(&j);
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        2 * 14,
        "8 B to 64 KiB doubling, for 2 and 4 replicas"
    );
    for r in rows {
        let n = r["replicas"].as_f64().unwrap();
        let (alg, bus) = (
            r["algbw_gbs"].as_f64().unwrap(),
            r["busbw_gbs"].as_f64().unwrap(),
        );
        assert!((bus - alg * 2.0 * (n - 1.0) / n).abs() <= 1e-9 * bus.max(1.0));
        // What the ring really sent: 2(N−1)/N of the message, within a float per chunk.
        let (bytes, sent) = (
            r["bytes"].as_f64().unwrap(),
            r["bytes_on_wire"].as_f64().unwrap(),
        );
        assert!((sent - 2.0 * (n - 1.0) / n * bytes).abs() <= 8.0 * n, "{r}");
    }
    let pics = dir.path().join("net");
    let (code, out, err) = gpu_train(&[
        "network",
        "--project",
        "--from",
        j.to_str().unwrap(),
        "--params",
        "7e9",
        "--gpus",
        "1024",
        "--link",
        "400gbit",
        "--step-compute",
        "350ms",
        "-o",
        pics.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("assumptions:") && out.contains("ring") && out.contains("tree"),
        "{out}"
    );
    // The ring's sync, worked out here from its definition: 2(N−1) messages each paying α,
    // and 2(N−1)/N of the 4-byte-a-parameter gradient through each GPU's link at line rate.
    let number_after = |key: &str| -> f64 {
        let rest = out
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("{key} in {out}"));
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let alpha_us = number_after("α for the projection:");
    let ms = number_after("ring  sync");
    let (params, gpus, rate) = (7e9, 1024.0, 400e9);
    let wire_bytes = 2.0 * (gpus - 1.0) / gpus * 4.0 * params;
    let expected_ms = 2.0 * (gpus - 1.0) * alpha_us * 1e-3 + 8.0 * wire_bytes / rate * 1e3;
    // Printed to 0.1 ms, α to 0.01 µs (×2046 messages).
    assert!(
        (ms - expected_ms).abs() <= 0.05 + 2046.0 * 0.005e-3,
        "{ms} vs {expected_ms}: {out}"
    );
    assert!(
        out.contains(&format!("{:.2} GB on each GPU's link", wire_bytes / 1e9)),
        "{out}"
    );
    assert!(pics.join("link-utilisation-projected.png").is_file());
}

/// A clean run and its final snapshot's weights.
fn clean_run(dir: &Path, common: &[&str]) -> gpu_train::model::Model {
    let d = dir.join("clean");
    let mut a = common.to_vec();
    a.extend(["--snapshot-dir", d.to_str().unwrap()]);
    let (code, _, err) = gpu_train(&a);
    assert_eq!(code, 0, "{err}");
    checkpoint::load(
        &SnapshotDir::open(&d, 100)
            .unwrap()
            .latest()
            .unwrap()
            .unwrap(),
    )
    .unwrap()
    .0
}

#[test]
fn a_lost_or_damaged_message_stops_the_step_and_a_resume_ends_where_a_clean_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    // 2 replicas × 32 over 640 images: 10 steps an epoch, 2 epochs; snapshots every 4 steps.
    let common = [
        "--cpu",
        "--replicas",
        "2",
        "--batch-size",
        "32",
        "--limit",
        "640",
        "--epochs",
        "2",
        "--snapshot-every",
        "4",
        "--keep",
        "100",
    ];
    let want = clean_run(dir.path(), &common);
    for (fault, says) in [
        ("lose-message@13:1", "never arrived"),
        ("corrupt-message@13:0", "arrived damaged"),
    ] {
        let d = dir.path().join(fault.replace([':', '@'], "-"));
        let mut a = common.to_vec();
        a.extend(["--snapshot-dir", d.to_str().unwrap(), "--fault", fault]);
        let (code, _, err) = gpu_train(&a);
        assert_eq!(code, 3, "{fault}: {err}");
        let line = err.lines().find(|l| l.starts_with("gpu-train:")).unwrap();
        assert!(
            line.contains("global step 13") && line.contains(says),
            "{line}"
        );
        assert!(
            line.contains("not applied")
                && line.contains("taken after 12 steps")
                && line.contains("global steps 12-13"),
            "{line}"
        );
        assert!(line.contains("--resume"), "{line}");
        // The snapshot before the fault is whole; the faulty step wrote nothing after it.
        let latest = SnapshotDir::open(&d, 100)
            .unwrap()
            .latest()
            .unwrap()
            .unwrap();
        assert!(
            latest.ends_with("snapshot-000000012.safetensors"),
            "{}",
            latest.display()
        );
        let mut a = common.to_vec();
        a.extend(["--snapshot-dir", d.to_str().unwrap(), "--resume"]);
        let (code, _, err) = gpu_train(&a);
        assert_eq!(code, 0, "{err}");
        let got = checkpoint::load(
            &SnapshotDir::open(&d, 100)
                .unwrap()
                .latest()
                .unwrap()
                .unwrap(),
        )
        .unwrap()
        .0;
        assert!(
            got == want,
            "{fault}: the resumed run ended elsewhere (max {})",
            got.max_abs_diff(&want)
        );
    }
}

#[test]
fn a_slow_link_shows_as_waiting_in_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    let (code, out, err) = gpu_train(&[
        "--cpu",
        "--replicas",
        "2",
        "--limit",
        "256",
        "--epochs",
        "1",
        "--fault",
        "slow-link=5ms",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("delayed 5.0 ms"), "{out}");
    let steps = gpu_train::network::link::steps_from_trace(&json(&trace)).unwrap();
    // Two buckets × 2 messages of replica 0 a step (2 replicas: 2(N−1) = 2 each), and the
    // other replica's too: the ring is one thread, so each delay adds up.
    for s in &steps {
        assert!(s.allreduce_us >= 4.0 * 5_000.0, "{s:?}");
    }
    let (code, out, err) = gpu_train(&[
        "network",
        trace.to_str().unwrap(),
        "--link",
        "1gbit",
        "-o",
        dir.path().join("n").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sync ms measured"), "{out}");
    // The measured sync is printed beside the model's (before, only the model's 3.3 ms
    // pulses were summed and drawn), and named as waiting beyond the line rate.
    let line = out
        .lines()
        .find(|l| l.starts_with("measured, over these steps"))
        .unwrap_or_else(|| panic!("no measured summary: {out}"));
    let ms: f64 = line
        .split("took ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms >= 20.0, "{line}");
    assert!(line.contains("× the line-rate model"), "{line}");
    // Bad fault specs are one line, exit 2.
    for bad in ["slow-link=5", "lose-message@x", "melt@3", "slow-link=20s"] {
        let (code, _, err) = gpu_train(&[
            "--cpu",
            "--replicas",
            "2",
            "--epochs",
            "1",
            "--limit",
            "64",
            "--fault",
            bad,
        ]);
        assert_eq!(code, 2, "{bad}: {err}");
    }
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "1",
        "--limit",
        "64",
        "--fault",
        "lose-message@3",
    ]);
    assert_eq!(code, 2, "one replica has no messages to lose: {err}");
}

#[test]
fn hidden_width_moves_the_gradient_bytes_and_other_widths_are_refused_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = |h: usize| ((h * 784 + h + 10 * h + 10) * 4) as u64;
    let mut lines = Vec::new();
    for (h, extra) in [
        (64usize, vec!["--cpu", "--replicas", "2"]),
        (200, vec!["--cpu", "--replicas", "2"]),
        (37, vec!["--devices", "0,0"]),
    ] {
        if extra[0] == "--devices" && common::gpu("hidden_width_gpu").is_none() {
            continue;
        }
        let m = dir.path().join(format!("m{h}.jsonl"));
        let hs = h.to_string();
        let mut a = vec![
            "--hidden",
            &hs,
            "--limit",
            "640",
            "--epochs",
            "1",
            "--metrics",
            m.to_str().unwrap(),
        ];
        a.extend(extra.iter().copied());
        let (code, out, err) = gpu_train(&a);
        assert_eq!(code, 0, "--hidden {h}: {err}");
        assert!(out.contains(&format!("784 -> {h} ReLU")), "{out}");
        let rec = gpu_train::network::metrics::read(&m)
            .unwrap()
            .pop()
            .unwrap();
        // 5 steps of a 2-replica ring: each replica sends the whole gradient once a step.
        assert_eq!(
            rec["allreduce_sent_bytes"].as_u64().unwrap(),
            5 * bytes(h),
            "--hidden {h}"
        );
        lines.push(out);
    }
    // A snapshot of one width: predicted with, resumed only at that width.
    let s = dir.path().join("s");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--hidden",
        "64",
        "--limit",
        "640",
        "--epochs",
        "1",
        "--snapshot-dir",
        s.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = {
        let (c, _, e) = gpu_train(&[
            "--cpu",
            "--hidden",
            "128",
            "--limit",
            "640",
            "--epochs",
            "2",
            "--snapshot-dir",
            s.to_str().unwrap(),
            "--resume",
        ]);
        (c, e)
    };
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("784-64-10") && err.contains("784-128-10"),
        "{err}"
    );
    let (code, out, err) = gpu_train(&[
        "--cpu",
        "--limit",
        "640",
        "--epochs",
        "2",
        "--snapshot-dir",
        s.to_str().unwrap(),
        "--resume",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("784 -> 64 ReLU"), "{out}");
    let snap = SnapshotDir::open(&s, 3).unwrap().latest().unwrap().unwrap();
    let (code, out, err) = gpu_train(&["predict", snap.to_str().unwrap(), "--index", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("predicted"), "{out}");
    for bad in ["0", "5000"] {
        let (code, _, _) = gpu_train(&["--cpu", "--hidden", bad, "--epochs", "1"]);
        assert_eq!(code, 2);
    }
}

// Found by trying the new flags as a hostile user would (each failed before its fix), one
// test a finding.

/// Runs gpu-train in `dir`: (exit code, stdout, stderr).
fn run_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A short CPU run that writes the metrics file `metrics` in `dir`.
fn short_metrics_run(dir: &std::path::Path, metrics: &str) {
    let args = [
        "--cpu",
        "--limit",
        "128",
        "--epochs",
        "1",
        "--metrics",
        metrics,
    ];
    let (code, _, err) = run_in(dir, &args);
    assert_eq!(code, 0, "{err}");
}

/// A short 2-replica CPU run that writes `trace` in `dir`.
fn short_traced_run(dir: &std::path::Path, trace: &str) {
    let (code, _, err) = run_in(
        dir,
        &[
            "--cpu",
            "--replicas",
            "2",
            "--limit",
            "128",
            "--epochs",
            "1",
            "--trace",
            trace,
        ],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn bare_output_file_names_are_written_in_the_current_folder() {
    // The README's own commands name bare files.
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "--cpu",
            "--replicas",
            "2",
            "--limit",
            "128",
            "--epochs",
            "1",
            "--trace",
            "run.json",
            "--metrics",
            "run.jsonl",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_in(
        dir.path(),
        &["allreduce-bench", "--max-bytes", "64", "--json", "ar.json"],
    );
    assert_eq!(code, 0, "{err}");
    for name in ["run.json", "run.jsonl", "ar.json"] {
        assert!(dir.path().join(name).is_file(), "{name} not written");
    }
}

#[test]
fn link_rates_no_link_has_are_refused_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    short_traced_run(dir.path(), "run.json");
    for rate in ["1e-300", "0", "1e30"] {
        let (code, _, err) = run_in(dir.path(), &["network", "run.json", "--link", rate]);
        assert_eq!(code, 2, "--link {rate}: {err}");
        assert!(err.contains("--link"), "--link {rate}: {err}");
    }
}

#[test]
fn a_resumed_run_appends_to_its_metrics_instead_of_wiping_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "--cpu",
        "--replicas",
        "2",
        "--batch-size",
        "32",
        "--limit",
        "640",
        "--epochs",
        "2",
        "--snapshot-dir",
        "s",
        "--snapshot-every",
        "4",
        "--metrics",
        "m.jsonl",
        "--metrics-every",
        "2",
    ];
    let steps = || -> Vec<(String, u64)> {
        std::fs::read_to_string(dir.path().join("m.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            // The run records (the first line, and the resumed run's) say what ran.
            .filter(|v| v["kind"] != "run")
            .map(|v| {
                (
                    v["kind"].as_str().unwrap().to_string(),
                    v["global_step"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // The fault ends the run at global step 15, after the record of step 14 and the snapshot
    // of step 12: the resumed run redoes steps 13 and 14.
    let mut a = base.to_vec();
    a.extend(["--fault", "lose-message@15:1"]);
    assert_eq!(
        run_in(dir.path(), &a).0,
        3,
        "the fault ends the run with exit code 3"
    );
    let before = steps();
    assert_eq!(before.last().unwrap().1, 14, "{before:?}");
    let mut a = base.to_vec();
    a.push("--resume");
    let (code, out, err) = run_in(dir.path(), &a);
    assert_eq!(code, 0, "{err}");
    // The epoch resumed mid-way says its train figures cover only the steps since.
    assert!(
        out.contains("resumed after step 2: train figures of the steps since"),
        "{out}"
    );
    let after = steps();
    // The lines up to the snapshot are kept, and no step is there twice.
    assert_eq!(
        after[..before.len() - 1],
        before[..before.len() - 1],
        "{after:?}"
    );
    let step_records: Vec<u64> = after
        .iter()
        .filter(|r| r.0 == "step")
        .map(|r| r.1)
        .collect();
    let mut unique = step_records.clone();
    unique.dedup();
    assert_eq!(step_records, unique, "a step recorded twice");
    assert_eq!(
        after.last().unwrap(),
        &("epoch".to_string(), 20),
        "{after:?}"
    );
    // The first run's record opens the file; the resumed run's stands where its records begin.
    let runs: Vec<u64> = gpu_train::network::metrics::read(&dir.path().join("m.jsonl"))
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "run")
        .map(|r| r["global_step"].as_u64().unwrap())
        .collect();
    assert_eq!(runs, [0, 12]);
}

#[test]
fn an_f16_snapshot_resumes_only_in_f16() {
    let dir = tempfile::tempdir().unwrap();
    let f16 = [
        "--cpu",
        "--precision",
        "f16",
        "--limit",
        "128",
        "--epochs",
        "1",
    ];
    let (code, _, err) = run_in(dir.path(), &[&f16[..], &["--snapshot-dir", "h"]].concat());
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "--cpu",
            "--limit",
            "128",
            "--epochs",
            "2",
            "--snapshot-dir",
            "h",
            "--resume",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--precision f16"), "{err}");
}

#[test]
fn a_fault_on_a_replica_that_does_not_exist_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "--cpu",
            "--replicas",
            "2",
            "--epochs",
            "1",
            "--limit",
            "64",
            "--fault",
            "lose-message@0:7",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--fault"), "{err}");
}

#[test]
fn clap_errors_keep_their_detail_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in(dir.path(), &["predict"]);
    assert_eq!(code, 2);
    assert!(err.contains("<SNAPSHOT>"), "{err}");
}

#[test]
fn a_bad_gpu_train_font_is_named_and_the_system_font_used() {
    let dir = tempfile::tempdir().unwrap();
    short_metrics_run(dir.path(), "m.jsonl");
    std::fs::write(dir.path().join("not-a-font.ttf"), b"hello").unwrap();
    for (font, fault) in [
        ("missing.ttf", "cannot read the font"),
        ("not-a-font.ttf", "not a usable TrueType font"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
            .args(["plot", "m.jsonl", "-o", "pics"])
            .env("GPU_TRAIN_FONT", font)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("GPU_TRAIN_FONT={font}: {fault}")),
            "{font}: {err}"
        );
        assert_eq!(out.status.code(), Some(0), "{font}: {err}");
    }
}

#[test]
fn every_fault_given_fires_and_one_past_the_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 2 replicas × 32 over 640 images: 10 steps, global steps 0 to 9.
    let run = [
        "--cpu",
        "--replicas",
        "2",
        "--batch-size",
        "32",
        "--limit",
        "640",
        "--epochs",
        "1",
    ];
    // Two faults of one kind: the earlier fires (before, only the last one given was kept).
    let mut a = run.to_vec();
    a.extend(["--fault", "lose-message@2", "--fault", "lose-message@6"]);
    let (code, _, err) = run_in(dir.path(), &a);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("global step 2") && err.contains("never arrived"),
        "{err}"
    );
    // Given in the other order, the same.
    let mut a = run.to_vec();
    a.extend([
        "--fault",
        "corrupt-message@6:1",
        "--fault",
        "corrupt-message@4:0",
    ]);
    let (code, _, err) = run_in(dir.path(), &a);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("global step 4") && err.contains("arrived damaged"),
        "{err}"
    );
    // A step past the run would do nothing: refused up front, with the run's last step.
    let mut a = run.to_vec();
    a.extend(["--fault", "lose-message@10"]);
    let (code, _, err) = run_in(dir.path(), &a);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("last global step is 9"), "{err}");
    // One slow link at a time; its duration takes any unit network --latency takes.
    for (spec, code_wanted) in [
        ("slow-link=1e-3s", 0),
        ("slow-link=500µs", 0),
        ("slow-link=2e", 2),
    ] {
        let mut a = run.to_vec();
        a.extend(["--fault", spec]);
        let (code, _, err) = run_in(dir.path(), &a);
        assert_eq!(code, code_wanted, "{spec}: {err}");
    }
    let mut a = run.to_vec();
    a.extend(["--fault", "slow-link=1ms", "--fault", "slow-link=2ms"]);
    let (code, _, err) = run_in(dir.path(), &a);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("one slow-link"), "{err}");
}

/// A fit the measurements do not follow is called untrustworthy: before, a worst error of
/// 216 % was printed and the projection went on as if nothing were wrong.
#[test]
fn a_projection_from_a_bad_fit_says_not_to_trust_it() {
    let dir = tempfile::tempdir().unwrap();
    // 2 replicas, 1 and 4 MB: the larger message measured faster than the smaller, which no
    // latency-plus-bandwidth line can follow; then the same from a line it follows exactly.
    let row = |bytes: f64, seconds: f64| {
        serde_json::json!({
            "replicas": 2, "bytes": bytes as u64, "bytes_on_wire": bytes as u64,
            "seconds": seconds, "algbw_gbs": bytes / seconds / 1e9, "busbw_gbs": bytes / seconds / 1e9,
        })
    };
    for (name, rows, warned) in [
        (
            "bad.json",
            vec![row(1e6, 9e-3), row(2e6, 1e-3), row(4e6, 2e-3)],
            true,
        ),
        (
            "good.json",
            vec![
                row(1e6, 2e-6 + 2e-3),
                row(2e6, 2e-6 + 4e-3),
                row(4e6, 2e-6 + 8e-3),
            ],
            false,
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(&rows).unwrap()).unwrap();
        let (code, out, err) = run_in(
            dir.path(),
            &[
                "network",
                "--project",
                "--from",
                name,
                "--params",
                "1e9",
                "--gpus",
                "8",
                "-o",
                "p",
            ],
        );
        assert_eq!(code, 0, "{name}: {err}");
        assert_eq!(out.contains("do not trust"), warned, "{name}: {out}");
    }
}

/// A trace of many steps is streamed to its file, not held in memory: 5,000 traced steps of
/// two replicas (70,000 events, an 11 MB file) run within 244 MiB of address space (36 MB
/// resident here; before, 376 MB resident: the events were held as JSON values and copied
/// once more to be written, and under this limit the run aborted).
#[test]
fn a_long_trace_is_streamed_not_held() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--cpu",
        "--replicas",
        "2",
        "--batch-size",
        "1",
        "--limit",
        "10000",
        "--epochs",
        "1",
        "--trace",
        "t.json",
        "--trace-steps",
        "0..1000000",
    ];
    let (code, err) = run_limited(dir.path(), &args, 250_000);
    assert_eq!(code, 0, "{err}");
    let doc = json(&dir.path().join("t.json"));
    let events = doc["traceEvents"].as_array().unwrap().len();
    assert!(events > 50_000, "{events} events");
}

/// Runs gpu-train in `dir` within `limit_kb` of address space (`ulimit -v`; the resident size
/// of a child cannot be measured from a test binary whose other threads are busy: a spawned
/// child's peak counts its parent's pages until it execs). Two malloc arenas, so the limit
/// measures the data, not how many cores the machine has. Returns (exit code, stderr).
fn run_limited(dir: &std::path::Path, args: &[&str], limit_kb: u64) -> (i32, String) {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let line = format!(
        "ulimit -v {limit_kb}; exec '{}' {}",
        env!("CARGO_BIN_EXE_gpu-train"),
        quoted.join(" ")
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &line])
        .env("MALLOC_ARENA_MAX", "2")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plot_names_the_folder_that_is_a_file_and_the_axis_it_cannot_draw() {
    let dir = tempfile::tempdir().unwrap();
    short_metrics_run(dir.path(), "m.jsonl");
    std::fs::write(dir.path().join("a-file"), "mine\n").unwrap();
    let (code, _, err) = run_in(dir.path(), &["plot", "m.jsonl", "-o", "a-file"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-o a-file: that is a file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a-file")).unwrap(),
        "mine\n"
    );
    // A step far past any run: the x axis is named, not the y.
    std::fs::write(
        dir.path().join("far.jsonl"),
        "{\"kind\":\"step\",\"epoch\":1,\"global_step\":1e20,\"train_loss\":2.3,\"train_accuracy\":10}\n",
    )
    .unwrap();
    let (code, _, err) = run_in(dir.path(), &["plot", "far.jsonl", "-o", "p"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("global step runs to 1e20"), "{err}");
}

/// `plot` keeps only what it draws of each record: a 109 MB metrics file of 400,000 step
/// records is drawn within 244 MiB of address space (81 MB resident here; before, 1.07 GB:
/// every line kept as parsed JSON).
#[test]
fn plot_memory_follows_what_it_draws_not_the_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.path().join("big.jsonl")).unwrap());
    for i in 0..400_000u64 {
        writeln!(
            f,
            "{{\"kind\":\"step\",\"epoch\":1,\"global_step\":{i},\"replicas\":2,\"global_batch\":64,\"train_loss\":{},\"train_accuracy\":10.5,\"time_s\":1.2,\"staged_bytes\":123456,\"allreduce_sent_bytes\":407080,\"allreduce_received_bytes\":407080,\"readback_bytes\":407080}}",
            2.3 - i as f64 * 1e-6
        )
        .unwrap();
    }
    drop(f);
    let (code, err) = run_limited(dir.path(), &["plot", "big.jsonl", "-o", "p"], 250_000);
    assert_eq!(code, 0, "{err}");
}

/// `network --project` takes the fabric into its model: the slowest link a flow crosses sets
/// its rate (checked against the lab in BENCHMARKS: 4 hosts at 100 Mbit/s, 48.9 ms modelled,
/// 49.3 measured; a 2:1 leaf-spine 50.2; a 50 Mbit/s straggler 106.6 against 97.7).
#[test]
fn the_projection_takes_the_fabric_and_the_straggler() {
    let dir = tempfile::tempdir().unwrap();
    let sync = |extra: &[&str]| -> (f64, f64) {
        let mut a = vec![
            "network",
            "--project",
            "--params",
            "101770",
            "--gpus",
            "4",
            "--link",
            "100mbit",
            "--step-compute",
            "1ms",
            "-o",
            "p",
        ];
        a.extend_from_slice(extra);
        let (code, out, err) = run_in(dir.path(), &a);
        assert_eq!(code, 0, "{extra:?}: {err}");
        let ms = |algo: &str| -> f64 {
            let line = out
                .lines()
                .find(|l| l.trim_start().starts_with(algo))
                .unwrap();
            line.split("sync")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (ms("ring"), ms("tree"))
    };
    // 2·(3/4)·407,080 bytes at 100 Mbit/s: 48.85 ms; at half the rate, twice that.
    let (one, half) = (
        2.0 * 0.75 * 407_080.0 * 8.0 / 1e8 * 1e3,
        2.0 * 0.75 * 407_080.0 * 8.0 / 5e7 * 1e3,
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 0.05;
    let (r, t) = sync(&[]);
    assert!(close(r, one) && close(t, one), "{r} {t}");
    // Leaves of 2 under 100 Mbit/s uplinks: the ring crosses each uplink once each way (no
    // slower); a tree's 2 flows share it (half the rate).
    let (r, t) = sync(&["--hosts-per-leaf", "2", "--uplink", "100mbit"]);
    assert!(close(r, one) && close(t, half), "{r} {t}");
    // A straggler at 50 Mbit/s sets both.
    let (r, t) = sync(&["--slowest", "50mbit"]);
    assert!(close(r, half) && close(t, half), "{r} {t}");
    for bad in [
        &["--uplink", "1gbit"][..],
        &["--hosts-per-leaf", "2.5"],
        &["--hosts-per-leaf", "9"],
    ] {
        let mut a = vec!["network", "--project", "--gpus", "4", "-o", "p"];
        a.extend_from_slice(bad);
        let (code, _, err) = run_in(dir.path(), &a);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
}

#[test]
fn nic_counters_go_into_every_metrics_record() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--cpu", "--limit", "256", "--epochs", "1"];
    let (code, _, err) = run_in(
        dir.path(),
        &[
            &base[..],
            &[
                "--metrics",
                "m.jsonl",
                "--metrics-every",
                "1",
                "--nic",
                "lo",
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "run" {
            continue; // what ran, not what it counted
        }
        for k in [
            "nic_tx_bytes",
            "nic_rx_bytes",
            "nic_tx_packets",
            "nic_tcp_retransmits",
        ] {
            assert!(v[k].is_u64(), "{k} missing: {line}");
        }
    }
    // Nowhere to put the samples, or no such interface: refused before training.
    for (extra, says) in [
        (&["--nic", "lo"][..], "give one of them"),
        (
            &["--nic", "no-such-nic0", "--metrics", "n.jsonl"][..],
            "no such network interface",
        ),
    ] {
        let (code, out, err) = run_in(dir.path(), &[&base[..], extra].concat());
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says) && !out.contains("epoch"), "{err}");
    }
}

#[test]
fn a_lab_fabric_is_drawn_and_a_fabric_no_lab_builds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, json: &str| std::fs::write(dir.path().join(name), json).unwrap();
    write(
        "ok.json",
        r#"{"hosts": 4, "leaves": 2, "host_rate": "100mbit", "uplink_rate": "100mbit", "slow_host": [4, "50mbit"]}"#,
    );
    write(
        "one.json",
        r#"{"hosts": 1, "leaves": 1, "host_rate": "1gbit", "uplink_rate": "1gbit"}"#,
    );
    write("junk.json", r#"{"hosts": "many"}"#);
    let (code, out, err) = run_in(dir.path(), &["network", "--topology", "ok.json", "-o", "t"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("topology.png") && dir.path().join("t/topology.svg").is_file(),
        "{out}"
    );
    for bad in ["one.json", "junk.json"] {
        let (code, _, err) = run_in(dir.path(), &["network", "--topology", bad, "-o", "t"]);
        assert_eq!(code, 2, "{bad}: {err}");
    }
}

/// Found by trying the new network flags as a hostile user would (each failed before its fix).
#[test]
fn projection_fabric_edge_cases_are_right_or_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "network",
        "--project",
        "--gpus",
        "4",
        "--link",
        "100mbit",
        "-o",
        "p",
    ];
    let run = |extra: &[&str]| run_in(dir.path(), &[&base[..], extra].concat());
    let ring_ms = |out: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("ring"))
            .unwrap();
        line.split("sync")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // One leaf holding every GPU is one switch: the same times as without a fabric.
    let (code, one, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    let (code, leaf, err) = run(&["--hosts-per-leaf", "4", "--uplink", "10mbit"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ring_ms(&one), ring_ms(&leaf), "{leaf}");
    // Where the uplink is the bottleneck the GPU's own link idles most of the sync.
    let (code, out, err) = run(&["--hosts-per-leaf", "2", "--uplink", "10mbit"]);
    assert_eq!(code, 0, "{err}");
    let busy: f64 = out
        .split("that link busy")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(busy < 15.0, "{out}");
    // Refused before anything is printed, naming the flag.
    for (extra, says) in [
        (&["--hosts-per-leaf", "3"][..], "--hosts-per-leaf"),
        (
            &["--hosts-per-leaf", "2", "--uplink", "fast"],
            "--uplink fast",
        ),
        (&["--slowest", "0mbit"], "--slowest 0mbit"),
    ] {
        let (code, out, err) = run(extra);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(
            err.contains(says) && out.is_empty(),
            "{extra:?}: {out} / {err}"
        );
    }
    // A step too long to draw: the projection is printed, no picture (and no half of one).
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "network",
            "--project",
            "--gpus",
            "4",
            "--link",
            "100mbit",
            "--slowest",
            "1kbit",
            "-o",
            "slow",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("picture: none") && !dir.path().join("slow").exists(),
        "{out}"
    );
    // Fabric flags without --project are refused, not ignored.
    let (code, _, err) = run_in(
        dir.path(),
        &["network", "--topology", "x.json", "--slowest", "1gbit"],
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn plot_and_topology_refuse_what_they_cannot_mean_and_leave_no_half_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "far.jsonl",
        "{\"kind\":\"epoch\",\"epoch\":1,\"global_step\":1,\"train_loss\":2.3,\"test_loss\":2.2,\"test_accuracy\":10}\n\
         {\"kind\":\"step\",\"epoch\":1,\"global_step\":1e300,\"train_loss\":2.3,\"train_accuracy\":10}\n",
    );
    let (code, _, err) = run_in(dir.path(), &["plot", "far.jsonl", "-o", "far"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("far.jsonl"), "{err}");
    let left: Vec<_> =
        std::fs::read_dir(dir.path().join("far")).map_or(vec![], |d| d.flatten().collect());
    assert!(left.is_empty(), "pictures left behind: {left:?}");
    write("array.jsonl", "[\"step\",1,2,3,4,5,6]\n");
    let (code, _, err) = run_in(dir.path(), &["plot", "array.jsonl", "-o", "a"]);
    assert_eq!(code, 2, "{err}");
    for (json, says) in [
        (
            r#"{"hosts": 4, "leaves": 2, "host_rate": "100mbit", "uplink_rate": "100mbit", "slow_host": [99, "50mbit"]}"#,
            "slow_host 99",
        ),
        (
            r#"{"hosts": 4, "leaves": 2, "host_rate": "fast", "uplink_rate": "100mbit"}"#,
            "host_rate",
        ),
        (
            r#"{"hosts": 4, "leaves": 2, "host_rate": "1gbit", "uplink_rate": "1gbit", "loss_percent": -5}"#,
            "loss_percent",
        ),
        ("[1, 2]", "not a JSON object"),
    ] {
        write("t.json", json);
        let (code, _, err) = run_in(dir.path(), &["network", "--topology", "t.json", "-o", "t"]);
        assert_eq!(code, 2, "{json}: {err}");
        assert!(err.contains(says), "{json}: {err}");
    }
    // --allreduce is for MPI jobs: without --mpi it is refused, not ignored.
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "--cpu",
            "--limit",
            "64",
            "--epochs",
            "1",
            "--allreduce",
            "mpi",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--allreduce") && err.contains("--mpi"),
        "{err}"
    );
}

/// `--project --model`: α and γ from a lab's calibrated model.json enter the projection. The
/// ring's sync is computed here from the chapter's formula, 2(G − 1)·α + B·(8/R + γ) with
/// B = 2(G − 1)/G × 4 bytes a parameter, and compared with what is printed.
#[test]
fn a_projection_takes_alpha_and_gamma_from_a_calibrated_model() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, gamma, params, gpus, rate) = (30e-6, 5e-9, 1e8, 8.0, 100e9);
    let model = serde_json::json!({"alpha": alpha, "gamma": gamma, "rate": 1e9,
        "worst_error": 0.1, "source": "a lab run"});
    std::fs::write(dir.path().join("model.json"), model.to_string()).unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "network",
            "--project",
            "--model",
            "model.json",
            "--link",
            "100gbit",
            "--params",
            "1e8",
            "--gpus",
            "8",
            "-o",
            "p",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("calibrated in a lab run"), "{out}");
    let bytes = 2.0 * (gpus - 1.0) / gpus * 4.0 * params;
    let want_ms = 1e3 * (2.0 * (gpus - 1.0) * alpha + bytes * (8.0 / rate + gamma));
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("ring  sync"))
        .unwrap();
    let got: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        (got - want_ms).abs() < 0.05,
        "printed {got} ms, the formula gives {want_ms:.2} ms"
    );
    // Without γ the same projection is faster by exactly the bytes' host cost.
    let (_, out0, _) = run_in(
        dir.path(),
        &[
            "network",
            "--project",
            "--link",
            "100gbit",
            "--latency",
            "30us",
            "--params",
            "1e8",
            "--gpus",
            "8",
            "-o",
            "p",
        ],
    );
    let line0 = out0
        .lines()
        .find(|l| l.trim_start().starts_with("ring  sync"))
        .unwrap();
    let got0: f64 = line0.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        (got - got0 - 1e3 * bytes * gamma).abs() < 0.05,
        "{got} vs {got0}"
    );
}

/// An `allreduce-bench` output read as a reader of nccl-tests' `all_reduce_perf` reads it: each
/// table's N from its `# N = ` line, each row's columns by position (size count type redop
/// root | time algbw busbw #wrong out-of-place | the same in-place | sent). Checks every row
/// (the sizes of -b/-e/-f, #wrong 0 or N/A, busbw = algbw × 2(N−1)/N from the printed
/// numbers) and the closing lines (the average of every busbw printed); returns each table's N.
fn check_nccl_tests_output(out: &str, sizes: &[usize], checked: bool) -> Vec<usize> {
    let mut tables: Vec<(usize, Vec<Vec<&str>>)> = Vec::new();
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("# N = ") {
            let n = n.split_whitespace().next().unwrap().parse().unwrap();
            tables.push((n, Vec::new()));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let t = tables.last_mut().unwrap_or_else(|| panic!("a row before any table: {line}"));
            t.1.push(line.split_whitespace().collect());
        }
    }
    assert!(!tables.is_empty(), "no table in:\n{out}");
    let num = |s: &str| -> f64 { s.parse().unwrap_or_else(|_| panic!("{s:?} is not a number in:\n{out}")) };
    let mut busbw = Vec::new();
    for (n, rows) in &tables {
        let got: Vec<usize> = rows.iter().map(|r| num(r[0]) as usize).collect();
        assert_eq!(got, sizes, "N = {n}: the sizes of the sweep");
        let factor = 2.0 * (*n as f64 - 1.0) / *n as f64;
        for r in rows {
            assert_eq!(r.len(), 14, "N = {n}: 14 columns in {r:?}");
            assert_eq!(num(r[1]) * 4.0, num(r[0]), "count of f32 in {r:?}");
            assert_eq!(&r[2..5], ["float", "sum", "-1"], "{r:?}");
            for c in [5, 9] {
                let (time, alg, bus) = (num(r[c]), num(r[c + 1]), num(r[c + 2]));
                assert!(time > 0.0, "{r:?}");
                // Each printed to 2 decimals: within half a unit of the last digit of each.
                assert!((bus - alg * factor).abs() <= 0.005 * (1.0 + factor) + 1e-9, "busbw ≠ algbw × {factor} in {r:?}");
                assert_eq!(r[c + 3], if checked { "0" } else { "N/A" }, "#wrong in {r:?}");
                busbw.push(bus);
            }
            assert!(num(r[13]) > 0.0, "sent in {r:?}");
        }
    }
    let bounds = if checked { "# Out of bounds values : 0 OK" } else { "# Out of bounds values : N/A" };
    assert!(out.contains(bounds), "{bounds} in:\n{out}");
    let avg = out
        .lines()
        .find_map(|l| l.strip_prefix("# Avg bus bandwidth    : "))
        .unwrap_or_else(|| panic!("no average line in:\n{out}"));
    let mean = busbw.iter().sum::<f64>() / busbw.len() as f64;
    assert!((num(avg.trim()) - mean).abs() <= 0.005 + 1e-4, "average {avg} of {busbw:?}");
    tables.iter().map(|t| t.0).collect()
}

/// -b, ×-f while within -e: the sizes nccl-tests sweeps.
fn sweep(min: usize, max: usize, factor: usize) -> Vec<usize> {
    std::iter::successors(Some(min), |b| Some(b * factor)).take_while(|&b| b <= max).collect()
}

// Issue 32, item 4: allreduce-bench in nccl-tests' terms, flags, columns and closing lines.
#[test]
fn allreduce_bench_prints_all_reduce_perfs_table_with_every_element_checked() {
    let flags = ["allreduce-bench", "-b", "8", "-e", "1M", "-f", "4", "-n", "10", "-w", "2", "-c", "1"];
    let (code, out, err) = gpu_train(&flags);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("minBytes 8 maxBytes 1048576 step: 4(factor) warmup iters: 2 iters: 10 validation: 1"),
        "the header names the flags as nccl-tests does:\n{out}"
    );
    let ns = check_nccl_tests_output(&out, &sweep(8, 1 << 20, 4), true);
    assert_eq!(ns, [2, 4], "a table for each of the default replicas");
    // -c 0: nothing checked, and the table says so.
    let (code, out, err) = gpu_train(&["allreduce-bench", "-g", "3", "-e", "64", "-n", "2", "-c", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(check_nccl_tests_output(&out, &sweep(8, 64, 2), false), [3]);
}

#[test]
fn allreduce_bench_refuses_sizes_and_steps_nccl_tests_would_not_run() {
    for (args, want) in [
        (&["-e", "2G"][..], "-e/--maxbytes 2147483648: from 4"),
        (&["-b", "2"], "-b/--minbytes 2: from 4"),
        (&["-b", "1M", "-e", "64K"], "-b/--minbytes 1048576 is above -e/--maxbytes 65536"),
        (&["-f", "1"], "-f/--stepfactor 1: at least 2"),
        (&["-n", "0"], "-n/--iters 0"),
        (&["-e", "1T"], "bytes, or a number with K, M or G"),
        (&["-c", "2"], "--check"),
        (&["-e", "1G", "-g", "4"], "× -g/--replicas 4 × 2 (send and receive)"),
    ] {
        let (code, _, err) = gpu_train(&[&["allreduce-bench"][..], args].concat());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in {err}");
    }
}
