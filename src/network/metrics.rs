//! `--metrics FILE.jsonl`: one JSON object a line, for plotting or any other tool.
//!
//! Every record has `kind` ("step" or "epoch"), `epoch`, `global_step`, `replicas`,
//! `global_batch`, `train_loss` and `train_accuracy` (over the steps since the previous record),
//! `time_s` (since the run started), `staged_bytes` (RAM → VRAM, per replica),
//! `allreduce_sent_bytes` and `allreduce_received_bytes` (per replica), `readback_bytes`
//! (VRAM → RAM, per replica); an epoch record adds `test_loss`, `test_accuracy` and
//! `epoch_time_s`, and the counts are the epoch's. Bytes are what the code moved, counted where
//! it moves them.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::train::Record;

/// The open metrics file.
pub struct Metrics {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl Metrics {
    /// Opens the file: a new run starts it afresh, a resumed one (`append`) adds to it, so the
    /// lines written before a crash are kept. The file stays locked while the run writes it: a
    /// second run given the same file is refused, rather than emptying the first one's.
    pub fn create(path: &Path, append: bool) -> Result<Metrics> {
        let refuse = |e: String| Error::Config(format!("--metrics {}: {e}", path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(false)
            .open(path)
            .map_err(|e| refuse(format!("cannot create it: {e}")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(refuse(
                    "another gpu-train run is writing this file; choose another".into(),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(refuse(format!("cannot lock it: {e}")))
            }
        }
        if !append {
            file.set_len(0)
                .map_err(|e| refuse(format!("cannot empty it: {e}")))?;
        }
        Ok(Metrics {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        let line = serde_json::to_string(r).expect("a record serialises");
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::Write {
                path: self.path.clone(),
                fault: format!("cannot write the metrics: {e}"),
            })
    }
}

/// Reads a metrics file back (for `gpu-train plot`).
pub fn read(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::bad_data(
                    path.display().to_string(),
                    format!("line {}: not JSON: {e}", i + 1),
                )
            })
        })
        .collect()
}
