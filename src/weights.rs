//! Weights in: any safetensors file holding this network's four tensors under PyTorch's names,
//! whoever wrote it. A gpu-train snapshot is one such file with the training state in its
//! metadata (and a checksum, which is then checked); a file from
//! `safetensors.torch.save_file(model.state_dict(), ...)` of a module with two `nn.Linear`
//! layers named `hidden` and `output` is another. Predicting, explaining and starting a run
//! need only the weights; resuming needs a snapshot's state too.
//!
//! Tensors: `hidden.weight` (128, 784), `hidden.bias` (128), `output.weight` (10, 128),
//! `output.bias` (10), row-major as PyTorch stores them, in F32, or F16/BF16/F64 converted to
//! F32 (the `half` crate does the 16-bit formats). Other tensors in the file are ignored and named.

use crate::checkpoint::{self, TrainState};
use crate::data::{CLASSES, PIXELS};
use crate::error::{Error, Result};
use crate::model::{Model, HIDDEN};
use safetensors::Dtype;
use std::path::Path;

/// The four tensors this network needs, with their shapes for `hidden` hidden neurons.
pub fn tensors(hidden: usize) -> [(&'static str, Vec<usize>); 4] {
    [
        ("hidden.weight", vec![hidden, PIXELS]),
        ("hidden.bias", vec![hidden]),
        ("output.weight", vec![CLASSES, hidden]),
        ("output.bias", vec![CLASSES]),
    ]
}

/// The four tensors' names.
pub const NAMES: [&str; 4] = [
    "hidden.weight",
    "hidden.bias",
    "output.weight",
    "output.bias",
];

/// Weights read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub model: Model,
    /// The training state, when the file is a gpu-train snapshot.
    pub snapshot: Option<TrainState>,
    /// The stored dtype of the weights (F32 for a snapshot).
    pub dtype: String,
    /// Tensors in the file that this network does not use.
    pub ignored: Vec<String>,
}

impl Loaded {
    /// One line saying what was read.
    pub fn describe(&self, path: &Path) -> String {
        let mut s = match &self.snapshot {
            Some(state) => format!(
                "snapshot {} (after {} steps; next epoch {}, step {})",
                path.display(),
                state.global_step,
                state.next.epoch,
                state.next.step
            ),
            None => format!(
                "weights {} (safetensors without gpu-train's training state, {}{})",
                path.display(),
                self.dtype,
                if self.dtype == "F32" {
                    ""
                } else {
                    " converted to F32"
                }
            ),
        };
        if !self.ignored.is_empty() {
            s += &format!("; ignored tensors: {}", self.ignored.join(", "));
        }
        s
    }
}

/// Converts a tensor's little-endian bytes of `dtype` to f32.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let words = |n: usize| bytes.chunks_exact(n);
    Some(match dtype {
        Dtype::F32 => words(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
        Dtype::F64 => words(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => words(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => words(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Reads the weights in `path`: a gpu-train snapshot (checked as for a resume) or a plain
/// safetensors file with the four tensors.
pub fn load(path: &Path) -> Result<Loaded> {
    let fail = |fault: String| Error::snapshot(path, fault);
    let bytes = crate::files::read_input(path, crate::checkpoint::MAX_WEIGHTS_FILE)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    checkpoint::check_unique_names(&bytes, path)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| fail(format!("not a readable safetensors file ({e})")))?;
    let is_snapshot = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format"))
        .is_some_and(|f| f.starts_with("gpu-train snapshot"));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| fail(format!("not a readable safetensors file ({e})")))?;
    let ignored: Vec<String> = {
        let mut names: Vec<String> = st
            .names()
            .into_iter()
            .filter(|n| !NAMES.contains(n))
            .map(|n| n.to_string())
            .collect();
        names.sort();
        names
    };
    let loaded = if is_snapshot {
        let (model, state) = checkpoint::decode(&bytes, path)?;
        Loaded {
            model,
            snapshot: Some(state),
            dtype: "F32".into(),
            ignored,
        }
    } else {
        let mut parts: Vec<Vec<f32>> = Vec::new();
        let mut dtypes: Vec<String> = Vec::new();
        // The width is the file's: the length of hidden.bias (any width loads; a run that
        // starts from it checks it against --hidden).
        let hidden = st
            .tensor("hidden.bias")
            .ok()
            .and_then(|t| (t.shape().len() == 1).then(|| t.shape()[0]))
            .filter(|&h| h > 0)
            .unwrap_or(HIDDEN);
        for (name, shape) in tensors(hidden) {
            let t = st.tensor(name).map_err(|_| {
                let found: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
                fail(format!(
                    "no tensor '{name}': this network needs {} (the file holds: {})",
                    NAMES.join(", "),
                    if found.is_empty() {
                        "nothing".into()
                    } else {
                        found.join(", ")
                    }
                ))
            })?;
            if t.shape() != shape.as_slice() {
                return Err(fail(format!(
                    "tensor '{name}' has shape {:?}, this network needs {shape:?} (784 inputs, {hidden} hidden neurons as hidden.bias says, {CLASSES} classes)",
                    t.shape()
                )));
            }
            let values = to_f32(t.dtype(), t.data()).ok_or_else(|| {
                fail(format!(
                    "tensor '{name}' is {:?}: weights must be F32, F16, BF16 or F64",
                    t.dtype()
                ))
            })?;
            dtypes.push(format!("{:?}", t.dtype()));
            parts.push(values);
        }
        dtypes.dedup();
        let mut it = parts.into_iter();
        let mut next = || it.next().expect("four tensors");
        Loaded {
            model: Model {
                w1: next(),
                b1: next(),
                w2: next(),
                b2: next(),
            },
            snapshot: None,
            dtype: dtypes.join("/"),
            ignored,
        }
    };
    if let Some((name, _, _)) = loaded
        .model
        .tensors()
        .iter()
        .find(|t| t.2.iter().any(|v| !v.is_finite()))
    {
        return Err(fail(format!(
            "tensor '{name}' holds NaN or infinite values: these weights cannot classify anything"
        )));
    }
    Ok(loaded)
}
