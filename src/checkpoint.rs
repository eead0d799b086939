//! Snapshots: the weights and the training state, written so that a crash at any moment
//! leaves the previous snapshot whole, and read back so that a resumed run ends with exactly
//! the weights of an uninterrupted one.
//!
//! A snapshot is one safetensors file, `snapshot-<global step, 9 digits>.safetensors`:
//! * tensors `hidden.weight` (128, 784), `hidden.bias`, `output.weight` (10, 128),
//!   `output.bias`, F32, the names and layout PyTorch's `nn.Linear` uses, so
//!   `safetensors.torch.load_file` gives a ready `state_dict`;
//! * metadata (strings): where to continue (`next_epoch`, `next_step`), the seed (the shuffle
//!   of epoch e is a function of seed and e, so no RNG state needs saving), learning rate, batch
//!   size, the model's shape, the training set's size and fingerprint, the gpu-train version
//!   and git commit that wrote it (`gpu_train_version`, `gpu_train_commit`; absent in older
//!   snapshots, which load all the same), and a CRC-32 over all of that and the tensor bytes,
//!   checked on load (over the keys the file has, so a key added later leaves old files valid).
//!
//! Writing: a temporary file in the same folder, written, flushed and fsync'd, renamed over the
//! final name (atomic on POSIX file systems), then the folder fsync'd so the rename itself is
//! durable. Temporary files never match the snapshot name pattern, so a half-written one is never
//! picked up; they are removed on the next start.

use crate::data::{Dataset, CLASSES, PIXELS};
use crate::error::{Error, Result};
use crate::files::read_input;
use crate::model::Model;
use std::collections::HashMap;

use std::path::Path;

pub const PREFIX: &str = "snapshot-";
pub const SUFFIX: &str = ".safetensors";

/// Where training continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The epoch to run next (from 1).
    pub epoch: usize,
    /// Steps of that epoch already done.
    pub step: usize,
}

impl Position {
    pub const START: Position = Position { epoch: 1, step: 0 };
}

/// Everything besides the weights that a resume needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub next: Position,
    /// Steps done in the whole run; names the file.
    pub global_step: u64,
    pub seed: u64,
    pub lr: f32,
    /// Each replica's batch.
    pub batch_size: usize,
    /// Data-parallel replicas in the run (1 for one device); the global batch is
    /// `replicas × batch_size`.
    pub replicas: usize,
    pub train_len: usize,
    pub train_fingerprint: u64,
    /// --precision f16: the loss scale and its count of good steps, so a resume continues
    /// exactly.
    pub loss_scale: Option<(f32, u32)>,
    /// What set the run's rounding (the training loop's `Replicas::arithmetic`): a resume on
    /// another engine or step is told it will not be bit-exact. None in older snapshots.
    pub trained_on: Option<String>,
}

impl TrainState {
    fn to_metadata(&self, hidden: usize) -> HashMap<String, String> {
        let mut m = HashMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("format", "gpu-train snapshot 1".into());
        // What wrote it, to trace a snapshot back to the code (not read back: a resume takes a
        // snapshot of any version whose fields it understands).
        put("gpu_train_version", env!("CARGO_PKG_VERSION").into());
        put("gpu_train_commit", env!("GPU_TRAIN_COMMIT").into());
        put("next_epoch", self.next.epoch.to_string());
        put("next_step", self.next.step.to_string());
        put("global_step", self.global_step.to_string());
        put("seed", self.seed.to_string());
        // Bits, not decimal text, so the learning rate comes back exactly.
        put("lr_bits", format!("{:08x}", self.lr.to_bits()));
        put("lr", self.lr.to_string());
        put("batch_size", self.batch_size.to_string());
        put("replicas", self.replicas.to_string());
        if let Some((scale, good)) = self.loss_scale {
            // A loss scale means the run trains in mixed precision.
            put("precision", "f16".into());
            put("loss_scale_bits", format!("{:08x}", scale.to_bits()));
            put("loss_scale_good_steps", good.to_string());
        }
        put(
            "global_batch",
            (self.batch_size.saturating_mul(self.replicas)).to_string(),
        );
        put("shape", shape_string(hidden));
        if let Some(on) = &self.trained_on {
            put("trained_on", on.clone());
        }
        put("train_len", self.train_len.to_string());
        put(
            "train_fingerprint",
            format!("{:016x}", self.train_fingerprint),
        );
        m
    }

    fn from_metadata(m: &HashMap<String, String>, path: &Path) -> Result<Self> {
        let get = |k: &str| -> Result<&String> {
            m.get(k).ok_or_else(|| {
                Error::snapshot(
                    path,
                    format!("not a gpu-train snapshot: no '{k}' in its metadata"),
                )
            })
        };
        fn num<T>(path: &Path, k: &str, v: &str, radix16: bool) -> Result<T>
        where
            T: TryFrom<u64>,
        {
            let parsed = if radix16 {
                u64::from_str_radix(v, 16).ok()
            } else {
                v.parse::<u64>().ok()
            };
            parsed.and_then(|x| T::try_from(x).ok()).ok_or_else(|| {
                Error::snapshot(
                    path,
                    format!("metadata '{k}' = '{v}' is not a valid number"),
                )
            })
        }
        // The width comes from the file ("784-H-10"); whether it fits the run is the caller's
        // question (a resume refuses another width, predict takes any).
        let shape = get("shape")?;
        let ok = shape
            .strip_prefix(&format!("{PIXELS}-"))
            .and_then(|r| r.strip_suffix(&format!("-{CLASSES}")))
            .and_then(|h| h.parse::<usize>().ok())
            .is_some_and(|h| h > 0);
        if !ok {
            return Err(Error::snapshot(
                path,
                format!("the snapshot is of a {shape} network, this program trains {PIXELS}-H-{CLASSES}"),
            ));
        }
        let lr_bits: u32 = num(path, "lr_bits", get("lr_bits")?, true)?;
        let state = TrainState {
            next: Position {
                epoch: num(path, "next_epoch", get("next_epoch")?, false)?,
                step: num(path, "next_step", get("next_step")?, false)?,
            },
            global_step: num(path, "global_step", get("global_step")?, false)?,
            seed: num(path, "seed", get("seed")?, false)?,
            lr: f32::from_bits(lr_bits),
            batch_size: num(path, "batch_size", get("batch_size")?, false)?,
            loss_scale: match (m.get("loss_scale_bits"), m.get("loss_scale_good_steps")) {
                (Some(b), Some(g)) => Some((
                    f32::from_bits(num(path, "loss_scale_bits", b, true)?),
                    num(path, "loss_scale_good_steps", g, false)?,
                )),
                _ => None,
            },
            // Snapshots from before data parallelism have no count: they were one replica.
            replicas: match m.get("replicas") {
                Some(v) => num(path, "replicas", v, false)?,
                None => 1,
            },
            train_len: num(path, "train_len", get("train_len")?, false)?,
            train_fingerprint: num(path, "train_fingerprint", get("train_fingerprint")?, true)?,
            // Shown in a note only: any text, cut to a line's length.
            trained_on: m
                .get("trained_on")
                .map(|v| v.chars().filter(|c| !c.is_control()).take(200).collect()),
        };
        state.check(path)?;
        Ok(state)
    }

    /// Every value within what a run can have written: a forged or damaged file (a batch
    /// size of 0 divided a run by zero) is refused on load, naming the value.
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |what: String| {
            Err(Error::snapshot(
                path,
                format!("metadata {what}: the file is damaged or was not written by gpu-train"),
            ))
        };
        if self.batch_size == 0 || self.batch_size > crate::config::MAX_BATCH {
            return bad(format!("batch_size = {}", self.batch_size));
        }
        if self.replicas == 0 || self.replicas > 1 << 16 {
            return bad(format!("replicas = {}", self.replicas));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr = {}", self.lr));
        }
        if self.train_len == 0 {
            return bad("train_len = 0".into());
        }
        if let Some((scale, good)) = self.loss_scale {
            use crate::engine::LossScaler;
            if !LossScaler::reachable(scale) || good >= LossScaler::GROWTH_INTERVAL {
                return bad(format!(
                    "loss scale = {scale} after {good} good steps (a run's is a power of two from 1 to {}, doubled every {} good steps)",
                    LossScaler::MAX,
                    LossScaler::GROWTH_INTERVAL
                ));
            }
        }
        Ok(())
    }
}

/// "784-H-10".
pub fn shape_string(hidden: usize) -> String {
    format!("{PIXELS}-{hidden}-{CLASSES}")
}

/// CRC-32 over the metadata (sorted, without the checksum itself) and the tensor bytes.
fn checksum(meta: &HashMap<String, String>, model: &Model) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut keys: Vec<&String> = meta.keys().filter(|k| *k != "crc32").collect();
    keys.sort();
    for k in keys {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(meta[k].as_bytes());
        h.update(b"\n");
    }
    for (_, _, data) in model.tensors() {
        h.update(bytemuck::cast_slice(data));
    }
    h.finalize()
}

/// The bytes of a snapshot file.
pub fn encode(model: &Model, state: &TrainState) -> Result<Vec<u8>> {
    let mut meta = state.to_metadata(model.hidden());
    meta.insert("crc32".into(), format!("{:08x}", checksum(&meta, model)));
    let tensors = model.tensors();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
            .expect("shape matches data");
            (*name, view)
        })
        .collect();
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Config(format!("cannot encode a snapshot: {e}")))
}

/// Whether `bytes` begin as a gpu-train snapshot does (a safetensors header naming the
/// format), however damaged the rest: what tells "a damaged snapshot, delete it" from "never a
/// snapshot" (`--resume /etc/passwd`, a PNG, a trace).
fn looks_like_snapshot(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1 << 16)];
    head.len() > 9 && head[8] == b'{' && head.windows(18).any(|w| w == b"gpu-train snapshot")
}

/// Refuses a safetensors header that names a tensor (or its metadata) twice: a JSON reader
/// keeps one of the two silently, so which weights were meant is a guess.
pub fn check_unique_names(bytes: &[u8], path: &Path) -> Result<()> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct Names;
    impl<'de> Visitor<'de> for Names {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut twice = None;
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(k.clone()) && twice.is_none() {
                    twice = Some(k);
                }
            }
            Ok(twice)
        }
    }
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    else {
        return Ok(());
    };
    let Some(header) = usize::try_from(len)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return Ok(()); // not safetensors at all: the reader says so
    };
    let mut de = serde_json::Deserializer::from_slice(header);
    if let Ok(Some(name)) = de.deserialize_map(Names) {
        return Err(Error::snapshot(
            path,
            format!(
                "its safetensors header names '{name}' twice: which one was meant cannot be known"
            ),
        ));
    }
    Ok(())
}

/// Reads and checks a snapshot file's bytes.
pub fn decode(bytes: &[u8], path: &Path) -> Result<(Model, TrainState)> {
    let bad = |what: String| {
        Error::snapshot(
            path,
            format!("{what}; the file is damaged: delete it to resume from the one before"),
        )
    };
    check_unique_names(bytes, path)?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        if looks_like_snapshot(bytes) {
            bad(format!("not a readable safetensors file ({e})"))
        } else {
            Error::snapshot(
                path,
                format!("not a gpu-train snapshot: not a safetensors file at all ({e}); --resume takes a snapshot-*.safetensors that --snapshot-dir wrote"),
            )
        }
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("unreadable header ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let state = TrainState::from_metadata(&meta, path)?;
    let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|_| Error::snapshot(path, format!("no tensor '{name}'")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
            return Err(Error::snapshot(
                path,
                format!(
                    "tensor '{name}' is {:?} {:?}, this model needs F32 {shape:?}: the snapshot is of a different model",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(bytemuck::pod_collect_to_vec(t.data()))
    };
    let hidden: usize = meta["shape"]
        .split('-')
        .nth(1)
        .and_then(|h| h.parse().ok())
        .expect("checked by from_metadata");
    let model = Model {
        w1: tensor("hidden.weight", &[hidden, PIXELS])?,
        b1: tensor("hidden.bias", &[hidden])?,
        w2: tensor("output.weight", &[CLASSES, hidden])?,
        b2: tensor("output.bias", &[CLASSES])?,
    };
    let stored = meta.get("crc32").cloned().unwrap_or_default();
    let actual = format!("{:08x}", checksum(&meta, &model));
    if stored != actual {
        return Err(bad(format!(
            "checksum mismatch (stored {stored:?}, computed {actual})"
        )));
    }
    Ok((model, state))
}

/// Loads one snapshot file.
pub fn load(path: &Path) -> Result<(Model, TrainState)> {
    let bytes = read_input(path, MAX_WEIGHTS_FILE)
        .map_err(|e| Error::snapshot(path, format!("cannot read: {e}")))?;
    decode(&bytes, path)
}

/// Checks that a snapshot belongs to this training set.
pub fn check_data(state: &TrainState, train: &Dataset, path: &Path) -> Result<()> {
    if state.train_len != train.len() || state.train_fingerprint != train.fingerprint() {
        return Err(Error::snapshot(
            path,
            format!(
                "the snapshot was taken training on a different data set ({} images, fingerprint {:016x}; \
                 now {} images, {:016x}): pass the same --data-dir and --limit as the run that wrote it",
                state.train_len,
                state.train_fingerprint,
                train.len(),
                train.fingerprint()
            ),
        ));
    }
    Ok(())
}

/// The largest snapshot or weights file a network this trainer takes can need: every
/// parameter of the widest network as f64, plus a header of up to 1 MiB.
pub const MAX_WEIGHTS_FILE: u64 =
    ((PIXELS + 1 + CLASSES) * crate::model::MAX_HIDDEN * 8 + CLASSES * 8 + (1 << 20)) as u64;

/// Writes `bytes` to `path` so that `path` either keeps its old content or has all of the new:
/// temporary file, write, fsync, rename, fsync of the folder. On any error the temporary file
/// is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::files::write_file(
        path,
        bytes,
        "the snapshot",
        "the previous snapshots are untouched",
    )
}


#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TrainState {
        TrainState {
            next: Position::START,
            global_step: 0,
            seed: 1,
            lr: 0.1,
            batch_size: 64,
            replicas: 1,
            train_len: 100,
            train_fingerprint: 7,
            loss_scale: None,
            trained_on: None,
        }
    }

    /// A snapshot names the version that wrote it; one written before that key existed (the
    /// same file without it, its checksum as that version computed it) still loads.
    #[test]
    fn snapshots_carry_the_version_and_old_ones_load() {
        let model = Model::init_with(3, 16);
        let bytes = encode(&model, &state()).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap();
        assert_eq!(meta["gpu_train_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(meta["gpu_train_commit"], env!("GPU_TRAIN_COMMIT"));
        let mut old = state().to_metadata(model.hidden());
        old.retain(|k, _| !k.starts_with("gpu_train_"));
        old.insert("crc32".into(), format!("{:08x}", checksum(&old, &model)));
        let tensors = model.tensors();
        let views: Vec<_> = tensors
            .iter()
            .map(|(name, shape, data)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytemuck::cast_slice(data),
                )
                .unwrap();
                (*name, view)
            })
            .collect();
        let old_bytes = safetensors::serialize(views, Some(old)).unwrap();
        let (loaded, st) = decode(&old_bytes, Path::new("old.safetensors")).unwrap();
        assert_eq!((loaded, st), (model, state()));
    }
}
