//! Weights in and out: safetensors files written without gpu-train's metadata, laid out as
//! PyTorch's `safetensors.torch.save_file(model.state_dict())` lays them (row-major, the four
//! names, no `__metadata__`), work for predict, explain and --init; bad ones get clear errors.

mod common;
use common::gpu_train;
use gpu_train::model::Model;
use gpu_train::weights;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::Path;

/// Writes `tensors` (name, dtype, shape, little-endian bytes) as a safetensors file with no
/// metadata, as PyTorch's save_file does by default.
fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The model's four tensors, converted by `conv` into `dtype`.
fn tensors(
    m: &Model,
    dtype: Dtype,
    conv: &dyn Fn(&[f32]) -> Vec<u8>,
) -> Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)> {
    m.tensors()
        .iter()
        .map(|(n, s, d)| (*n, dtype, s.clone(), conv(d)))
        .collect()
}

#[test]
fn plain_f32_f16_bf16_f64_files_load_with_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::init(11);
    let p = dir.path().join("w.safetensors");
    write(&p, &tensors(&m, Dtype::F32, &|v| f32_bytes(v)));
    let l = weights::load(&p).unwrap();
    assert_eq!(l.model, m);
    assert!(l.snapshot.is_none() && l.dtype == "F32" && l.ignored.is_empty());

    write(
        &p,
        &tensors(&m, Dtype::F64, &|v| {
            v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect()
        }),
    );
    assert_eq!(
        weights::load(&p).unwrap().model,
        m,
        "f32 → f64 → f32 is exact"
    );

    // 16-bit formats: the values come back rounded to 16 bits, exactly as half rounds them.
    let round = |m: &Model, f: &dyn Fn(f32) -> f32| Model {
        w1: m.w1.iter().map(|&x| f(x)).collect(),
        b1: m.b1.iter().map(|&x| f(x)).collect(),
        w2: m.w2.iter().map(|&x| f(x)).collect(),
        b2: m.b2.iter().map(|&x| f(x)).collect(),
    };
    write(
        &p,
        &tensors(&m, Dtype::F16, &|v| {
            v.iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect()
        }),
    );
    let l = weights::load(&p).unwrap();
    assert_eq!(l.model, round(&m, &|x| half::f16::from_f32(x).to_f32()));
    assert!(
        l.describe(&p).contains("F16 converted to F32"),
        "{}",
        l.describe(&p)
    );
    write(
        &p,
        &tensors(&m, Dtype::BF16, &|v| {
            v.iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect()
        }),
    );
    assert_eq!(
        weights::load(&p).unwrap().model,
        round(&m, &|x| half::bf16::from_f32(x).to_f32())
    );
}

#[test]
fn bad_files_are_refused_naming_the_tensor_and_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::init(12);
    let p = dir.path().join("w.safetensors");
    let good = tensors(&m, Dtype::F32, &|v| f32_bytes(v));
    let err = |t: &[(&str, Dtype, Vec<usize>, Vec<u8>)]| {
        write(&p, t);
        weights::load(&p).unwrap_err().to_string()
    };
    // A missing tensor.
    let e = err(&good[..3]);
    assert!(
        e.contains("no tensor 'output.bias'") && e.contains("the file holds"),
        "{e}"
    );
    // A wrong shape: a 64-neuron hidden layer.
    let mut t = good.clone();
    t[0] = (
        "hidden.weight",
        Dtype::F32,
        vec![64, 784],
        f32_bytes(&m.w1[..64 * 784]),
    );
    let e = err(&t);
    assert!(
        e.contains("'hidden.weight' has shape [64, 784]") && e.contains("[128, 784]"),
        "{e}"
    );
    // A transposed one.
    let mut t = good.clone();
    t[2] = ("output.weight", Dtype::F32, vec![128, 10], f32_bytes(&m.w2));
    assert!(err(&t).contains("'output.weight' has shape [128, 10]"));
    // An integer dtype.
    let mut t = good.clone();
    t[3] = ("output.bias", Dtype::I32, vec![10], vec![0; 40]);
    let e = err(&t);
    assert!(
        e.contains("'output.bias' is I32") && e.contains("F32, F16, BF16 or F64"),
        "{e}"
    );
    // NaN weights classify nothing.
    let mut bad = m.clone();
    bad.b2[3] = f32::NAN;
    let e = err(&tensors(&bad, Dtype::F32, &|v| f32_bytes(v)));
    assert!(e.contains("'output.bias' holds NaN"), "{e}");
    // Not safetensors at all.
    std::fs::write(&p, b"PK\x03\x04 a zip file").unwrap();
    assert!(weights::load(&p)
        .unwrap_err()
        .to_string()
        .contains("not a readable safetensors file"));
}

#[test]
fn extra_tensors_are_ignored_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::init(13);
    let p = dir.path().join("w.safetensors");
    let mut t = tensors(&m, Dtype::F32, &|v| f32_bytes(v));
    t.push(("optimizer.step", Dtype::I64, vec![1], vec![0; 8]));
    t.push(("extra.weight", Dtype::F32, vec![2, 2], vec![0; 16]));
    write(&p, &t);
    let l = weights::load(&p).unwrap();
    assert_eq!(l.model, m);
    assert_eq!(
        l.ignored,
        vec!["extra.weight".to_string(), "optimizer.step".to_string()]
    );
}

#[test]
fn predict_explain_and_init_take_a_pytorch_style_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pt.safetensors");
    let ps = p.to_str().unwrap();
    // Weights after 2 epochs of CPU training, written as PyTorch would write them.
    let snaps = dir.path().join("snaps");
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--epochs",
        "2",
        "--snapshot-dir",
        snaps.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let snap = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let trained = weights::load(&snap).unwrap();
    assert!(trained.snapshot.is_some());
    write(&p, &tensors(&trained.model, Dtype::F32, &|v| f32_bytes(v)));

    // predict: the same table from the plain file as from the snapshot.
    let (code, out, err) = gpu_train(&["predict", ps, "--index", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("without gpu-train's training state") && out.contains("← predicted"),
        "{out}"
    );
    let (_, from_snapshot, _) = gpu_train(&["predict", snap.to_str().unwrap(), "--index", "0"]);
    let table = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(table(&out), table(&from_snapshot));

    // explain --weights: chapter 3's table for a network that has learned something.
    let (code, out, err) = gpu_train(&["explain", "--weights", ps]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the weights of weights"), "{out}");

    // --init: a fresh run from these weights. From Model::init(42) written out, it is the
    // same run as the default one, to every printed digit.
    write(
        &p,
        &tensors(&Model::init(42), Dtype::F32, &|v| f32_bytes(v)),
    );
    let (code, with_init, err) = gpu_train(&["--cpu", "--epochs", "1", "--init", ps]);
    assert_eq!(code, 0, "{err}");
    assert!(
        with_init.contains("a fresh run: epoch 1, step 0"),
        "{with_init}"
    );
    let (_, plain, _) = gpu_train(&["--cpu", "--epochs", "1"]);
    let last = |s: &str| s.lines().last().unwrap().to_string();
    assert_eq!(last(&with_init), last(&plain));
    // --init and --resume together make no sense.
    let (code, _, _) = gpu_train(&["--cpu", "--init", ps, "--resume", ps]);
    assert_eq!(code, 2);
}
