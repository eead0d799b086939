//! WGSL has no includes, so each `*_f16.wgsl` kernel is a copy of an f32 sibling with its types
//! changed. These tests keep the copies honest: the code of each f16 kernel (comments and blank
//! lines aside) differs from its sibling's only in the lines listed here. A fix made in one file
//! and not the other, or a change to the f16 copy that is not about precision, fails here and
//! names the line.

use std::path::Path;

/// The lines of code of a shader: comments and blank lines dropped, whitespace trimmed.
fn code(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("shaders")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The lines only in `a` and the lines only in `b`, after matching the longest common
/// subsequence of the two (what `diff` shows as `<` and `>`).
fn differing(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j == b.len() || (i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1]) {
            only_a.push(a[i].clone());
            i += 1;
        } else {
            only_b.push(b[j].clone());
            j += 1;
        }
    }
    (only_a, only_b)
}

/// Asserts that `f16` differs from `f32` exactly in the lines listed: no more (an unlisted
/// change) and no fewer (a listed difference that has gone stays listed only by mistake).
fn assert_siblings(f32: &str, f16: &str, only_f32: &[&str], only_f16: &[&str]) {
    let (a, b) = differing(&code(f32), &code(f16));
    let want_a: Vec<String> = only_f32.iter().map(|s| s.to_string()).collect();
    let want_b: Vec<String> = only_f16.iter().map(|s| s.to_string()).collect();
    assert!(
        a == want_a && b == want_b,
        "{f16} has drifted from its sibling {f32}.\n\
         lines only in {f32}:\n  {}\nlines only in {f16}:\n  {}\n\
         (listed: {want_a:#?} and {want_b:#?})",
        a.join("\n  "),
        b.join("\n  "),
    );
}

#[test]
fn the_differ_finds_a_changed_line_and_nothing_else() {
    let a: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
    let b: Vec<String> = ["x", "Y", "z", "w"].map(String::from).to_vec();
    assert_eq!(
        differing(&a, &b),
        (
            vec!["y".to_string()],
            vec!["Y".to_string(), "w".to_string()]
        )
    );
    assert_eq!(differing(&a, &a), (vec![], vec![]));
}

#[test]
fn matmul_f16_is_matmul_reg8x4_in_half_precision_without_split_k() {
    assert_siblings(
        "matmul_reg8x4.wgsl",
        "matmul_f16.wgsl",
        &[
            "@group(0) @binding(0) var<storage, read> a: array<f32>;",
            "@group(0) @binding(1) var<storage, read> b: array<f32>;",
            "@group(0) @binding(2) var<storage, read> bias: array<f32>;",
            "@group(0) @binding(3) var<storage, read> mask: array<f32>;",
            "@group(0) @binding(4) var<storage, read_write> c: array<f32>;",
            "let k_begin = wid.z * params.k_per_split;",
            "let k_end = min(k_begin + params.k_per_split, params.k);",
            "av[i] = a[aoff[i] + ka];",
            "let bv = b[kb + boff[j]];",
            "if params.splits > 1u {",
            "c[wid.z * params.m * params.n + idx] = acc[i][j];",
            "continue;",
            "}",
            "v += params.beta * c[idx];",
            "v += bias[col];",
            "if (params.flags & MASK) != 0u && mask[idx] <= 0.0 {",
            "c[idx] = v;",
        ],
        &[
            "enable f16;",
            "@group(0) @binding(0) var<storage, read> a: array<f16>;",
            "@group(0) @binding(1) var<storage, read> b: array<f16>;",
            "@group(0) @binding(2) var<storage, read> bias: array<f16>;",
            "@group(0) @binding(3) var<storage, read> mask: array<f16>;",
            "@group(0) @binding(4) var<storage, read_write> c: array<f16>;",
            "let k_begin = 0u;",
            "let k_end = params.k;",
            "av[i] = f32(a[aoff[i] + ka]);",
            "let bv = f32(b[kb + boff[j]]);",
            "v += params.beta * f32(c[idx]);",
            "v += f32(bias[col]);",
            "if (params.flags & MASK) != 0u && mask[idx] <= 0.0h {",
            "c[idx] = f16(v);",
        ],
    );
}

#[test]
fn matmul_f16_f32out_is_matmul_f16_with_an_f32_result() {
    assert_siblings(
        "matmul_f16.wgsl",
        "matmul_f16_f32out.wgsl",
        &[
            "@group(0) @binding(4) var<storage, read_write> c: array<f16>;",
            "c[idx] = f16(v);",
        ],
        &[
            "@group(0) @binding(4) var<storage, read_write> c: array<f32>;",
            "c[idx] = f32(v);",
        ],
    );
}

#[test]
fn sgd_update_f16_is_sgd_update_that_also_writes_the_f16_copy() {
    assert_siblings(
        "sgd_update.wgsl",
        "sgd_update_f16.wgsl",
        &[
            "@group(0) @binding(2) var<uniform> params: Params;",
            "param[i] = param[i] - params.lr * grad[i];",
        ],
        &[
            "enable f16;",
            "@group(0) @binding(2) var<storage, read_write> param16: array<f16>;",
            "@group(0) @binding(3) var<uniform> params: Params;",
            "let w = param[i] - params.lr * grad[i];",
            "param[i] = w;",
            "param16[i] = f16(w);",
        ],
    );
}

#[test]
fn softmax_xent_f16_is_softmax_xent_with_an_f16_delta() {
    assert_siblings(
        "softmax_xent.wgsl",
        "softmax_xent_f16.wgsl",
        &[
            "@group(0) @binding(2) var<storage, read_write> dlogits: array<f32>;",
            "dlogits[row + c] = (p - onehot) / f32(params.divisor) * params.scale;",
        ],
        &[
            "enable f16;",
            "@group(0) @binding(2) var<storage, read_write> dlogits: array<f16>;",
            "dlogits[row + c] = f16((p - onehot) / f32(params.divisor) * params.scale);",
        ],
    );
}

#[test]
fn unpack_batch_f16_is_unpack_batch_writing_f16_pixels() {
    assert_siblings(
        "unpack_batch.wgsl",
        "unpack_batch_f16.wgsl",
        &[
            "@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;",
            "x[t] = v;",
        ],
        &[
            "enable f16;",
            "@group(0) @binding(3) var<storage, read_write> x: array<vec4<f16>>;",
            "x[t] = vec4<f16>(v);",
        ],
    );
}

#[test]
fn bias_grad_f16_serial_is_bias_update_serial_reading_an_f16_delta() {
    assert_siblings(
        "bias_update_serial.wgsl",
        "bias_grad_f16_serial.wgsl",
        &[
            "@group(0) @binding(0) var<storage, read> delta: array<f32>;",
            "part[t] += delta[(r0 + t) * params.cols + n];",
        ],
        &[
            "enable f16;",
            "@group(0) @binding(0) var<storage, read> delta: array<f16>;",
            "part[t] += f32(delta[(r0 + t) * params.cols + n]);",
        ],
    );
}

#[test]
fn bias_grad_f16_is_bias_update_reading_an_f16_delta() {
    assert_siblings(
        "bias_update.wgsl",
        "bias_grad_f16.wgsl",
        &[
            "@group(0) @binding(0) var<storage, read> delta: array<f32>;",
            "sum += delta[r * params.cols + n];",
        ],
        &[
            "enable f16;",
            "@group(0) @binding(0) var<storage, read> delta: array<f16>;",
            "sum += f32(delta[r * params.cols + n]);",
        ],
    );
}
