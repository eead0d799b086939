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
