//! The console reads at a glance (issue 32): no line a default run prints is wider than 120
//! columns, on the CPU or a GPU, with 1 or 4 replicas, in f32 or f16; what does not apply to a
//! run is not printed; the details come with -v; replicas that grow the global batch say how
//! to keep one device's result.

mod common;
use common::gpu_train;

/// Every line of a run's output (stdout and stderr) and its width in characters.
fn widths(args: &[&str]) -> (String, Vec<(usize, String)>) {
    let (code, out, err) = gpu_train(args);
    assert_eq!(code, 0, "gpu-train {}: {err}", args.join(" "));
    let text = format!("{out}{err}");
    let lines = text.lines().map(|l| (l.chars().count(), l.to_string())).collect();
    (text, lines)
}

fn assert_narrow(args: &[&str]) -> String {
    let (text, lines) = widths(args);
    let wide: Vec<_> = lines.iter().filter(|(w, _)| *w > 120).collect();
    assert!(wide.is_empty(), "gpu-train {}: lines over 120 columns: {wide:#?}", args.join(" "));
    assert!(text.contains("epoch  1/1"), "{text}");
    text
}

#[test]
fn no_default_line_is_over_120_columns_on_the_cpu() {
    let one = assert_narrow(&["--cpu", "--epochs", "1", "--limit", "640"]);
    assert!(!one.contains("replica") && !one.contains("ring payload"), "{one}");
    let f16 = assert_narrow(&["--cpu", "--epochs", "1", "--limit", "640", "--precision", "f16"]);
    // One device in f16 takes the separated step, but sums nothing with anyone.
    assert!(!f16.contains("ring payload") && !f16.contains("all-reduce:") && f16.contains("f16: loss scale"), "{f16}");
    let four = assert_narrow(&["--cpu", "--replicas", "4", "--epochs", "1", "--limit", "640", "--precision", "f16"]);
    assert!(four.contains("ring payload") && four.contains("4 replicas here, all the same"), "{four}");
    // The global batch grew 4×: the note gives what keeps one device's result, computed.
    assert!(four.contains("--batch-size 16 per replica") && four.contains("--lr 0.4"), "{four}");
}

#[test]
fn no_default_line_is_over_120_columns_on_a_gpu_and_the_details_come_with_v() {
    let Some(g) = common::gpu("no_default_line_is_over_120_columns_on_a_gpu") else {
        return;
    };
    let f16 = g.features.contains(wgpu::Features::SHADER_F16);
    drop(g);
    let one = assert_narrow(&["--epochs", "1", "--limit", "640"]);
    assert!(one.contains("engine: GPU ") && !one.contains("matmul per product"), "{one}");
    let four = assert_narrow(&["--replicas", "4", "--epochs", "1", "--limit", "640"]);
    assert!(four.contains("global batch 256"), "{four}");
    if f16 {
        let half = assert_narrow(&["--epochs", "1", "--limit", "640", "--precision", "f16"]);
        assert!(half.contains("mixed precision") && !half.contains("ring payload"), "{half}");
    } else {
        common::skip("the f16 GPU run", "adapter 0 has no SHADER_F16");
    }
    let (text, _) = widths(&["--epochs", "1", "--limit", "640", "-v"]);
    assert!(text.contains("matmul per product: ") && text.contains("adapter: "), "{text}");
}

/// `network` prints a summary of the traced steps by default (median and 95th percentile of
/// each column), the full table with --table; and the trace leaves out step 0, the warm-up.
#[test]
fn network_summarises_the_traced_steps_and_the_trace_leaves_out_the_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    let t = trace.to_str().unwrap();
    // 640 images, 2 replicas × 64: 5 steps, of which the default --trace-steps 1..51 traces 4.
    let (code, _, err) = gpu_train(&["--cpu", "--replicas", "2", "--epochs", "1", "--limit", "640", "--trace", t]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let steps: std::collections::BTreeSet<u64> = json["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["args"]["step"].as_u64())
        .collect();
    assert_eq!(steps.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4], "the warm-up step 0 is left out");
    let out_dir = dir.path().join("net");
    let run = |extra: &[&str]| {
        let mut args = vec!["network", t, "--link", "1gbit", "-o", out_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, out, err) = gpu_train(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let summary = run(&[]);
    let table = run(&["--table"]);
    // The table's compute column, one row a step; its median, computed here.
    let mut compute: Vec<f64> = table
        .lines()
        .filter(|l| l.split_whitespace().count() == 7 && l.split_whitespace().all(|w| w.trim_end_matches('%').parse::<f64>().is_ok()))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(compute.len(), 4, "{table}");
    compute.sort_by(f64::total_cmp);
    let median: f64 = summary
        .lines()
        .find(|l| l.trim_start().starts_with("compute ms"))
        .unwrap_or_else(|| panic!("{summary}"))
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    // Nearest rank: the 2nd of 4.
    assert!((median - compute[1]).abs() < 1.5e-3, "median {median} of {compute:?}");
    assert!(summary.contains("p95") && summary.contains("link busy") && !table.contains("p95"), "{summary}");
}

/// The pictures `plot` draws: whole-number ticks for epochs (no "2.5"), the epoch axis from the
/// first epoch (no 0), and a legend only where there are several series (read from the SVG).
#[test]
fn plot_draws_whole_number_epochs_from_the_first_and_a_legend_only_for_several_series() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.jsonl");
    let (code, _, err) = gpu_train(&["--cpu", "--epochs", "4", "--limit", "640", "--metrics", m.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let out = dir.path().join("p");
    let (code, _, err) = gpu_train(&["plot", m.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // The SVG's text elements, trimmed.
    let texts = |name: &str| -> Vec<String> {
        let svg = std::fs::read_to_string(out.join(name)).unwrap();
        svg.split("<text").skip(1).map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim().to_string()).collect()
    };
    let loss = texts("loss-by-epoch.svg");
    for tick in ["1", "2", "3", "4"] {
        assert!(loss.iter().any(|t| t == tick), "epoch tick {tick} missing: {loss:?}");
    }
    assert!(!loss.iter().any(|t| t == "0" || t == "2.5" || t == "3.5"), "{loss:?}");
    // Two series (train, test): a legend names them. One series: no legend.
    assert!(loss.iter().any(|t| t == "train") && loss.iter().any(|t| t == "test"), "{loss:?}");
    let acc = texts("accuracy-by-epoch.svg");
    assert!(!acc.iter().any(|t| t == "test"), "a legend on a one-series plot: {acc:?}");
}

/// `plot` lays several metrics files over each other, each series named after its file.
#[test]
fn plot_overlays_several_metrics_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, lr) in [("lr-0.1", "0.1"), ("lr-0.02", "0.02")] {
        let m = dir.path().join(format!("{name}.jsonl"));
        let (code, _, err) = gpu_train(&["--cpu", "--epochs", "2", "--limit", "640", "--lr", lr, "--metrics", m.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        files.push(m.to_str().unwrap().to_string());
    }
    let out = dir.path().join("p");
    let (code, _, err) = gpu_train(&["plot", &files[0], &files[1], "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(out.join("loss-by-epoch.svg")).unwrap();
    for label in ["lr-0.1: train", "lr-0.1: test", "lr-0.02: train", "lr-0.02: test"] {
        assert!(svg.contains(label), "{label} missing from the overlaid picture");
    }
}
