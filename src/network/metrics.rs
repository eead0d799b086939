//! `--metrics FILE.jsonl`: one JSON object a line, for plotting or any other tool.
//!
//! Every record has `kind` ("step" or "epoch"), `epoch`, `global_step`, `replicas`,
//! `global_batch`, `train_loss` and `train_accuracy` (over the steps since the previous record),
//! `time_s` (since the run started), `staged_bytes` (RAM → VRAM, per replica),
//! `allreduce_sent_bytes` and `allreduce_received_bytes` (per replica), `readback_bytes`
//! (VRAM → RAM, per replica); an epoch record adds `test_loss`, `test_accuracy` and
//! `epoch_time_s`, and the counts are the epoch's. Bytes are what the code moved, counted where
//! it moves them. With `--nic IFACE` each record adds what that NIC counted since the previous
//! record: `nic_tx_bytes` and `nic_rx_bytes` (frames with their Ethernet, IP and TCP headers),
//! `nic_tx_packets`, `nic_rx_packets` and `nic_tcp_retransmits`, to set beside `allreduce_sent_bytes`.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::train::report::Record;

/// The open metrics file.
pub struct Metrics {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    /// --nic: the interface and its counters at the previous record.
    nic: Option<(String, super::nic::Sample)>,
}

impl Metrics {
    /// Opens the file: a new run starts it afresh; a run resumed from global step `g`
    /// (`resumed_at: Some(g)`) keeps the lines of steps up to `g` and adds to them, so the
    /// lines written before a crash are kept and the steps redone after the snapshot are not
    /// there twice. The file stays locked while the run writes it: a second run given the
    /// same file is refused, rather than emptying the first one's.
    pub fn create(path: &Path, resumed_at: Option<u64>) -> Result<Metrics> {
        let append = resumed_at.is_some();
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
        let keep = match resumed_at {
            None => 0,
            Some(g) => lines_up_to(path, g).map_err(|e| refuse(format!("cannot read it: {e}")))?,
        };
        // One truncate: the lines of a run's file are in step order, so the redone ones are
        // its end.
        file.set_len(keep)
            .map_err(|e| refuse(format!("cannot cut it to the resumed step: {e}")))?;
        Ok(Metrics {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
            nic: None,
        })
    }

    /// Adds what NIC `nic` counts from now on to every record (see the module doc).
    pub fn with_nic(mut self, nic: &str) -> Result<Self> {
        let now = super::nic::read_now(nic).ok_or_else(|| {
            Error::Config(format!(
                "--nic {nic}: no such network interface here (see `ip link`)"
            ))
        })?;
        self.nic = Some((nic.to_string(), now));
        Ok(self)
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        let mut value = serde_json::to_value(r).expect("a record serialises");
        if let Some((nic, before)) = &mut self.nic {
            if let Some(now) = super::nic::read_now(nic) {
                let d = |a: u64, b: u64| serde_json::json!(b.saturating_sub(a));
                value["nic_tx_bytes"] = d(before.tx_bytes, now.tx_bytes);
                value["nic_rx_bytes"] = d(before.rx_bytes, now.rx_bytes);
                value["nic_tx_packets"] = d(before.tx_packets, now.tx_packets);
                value["nic_rx_packets"] = d(before.rx_packets, now.rx_packets);
                value["nic_tcp_retransmits"] = d(before.retransmits, now.retransmits);
                *before = now;
            }
        }
        let line = value.to_string();
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::Write {
                path: self.path.clone(),
                fault: format!("cannot write the metrics: {e}"),
            })
    }
}

/// Bytes at the start of the metrics file at `path` that hold records of global steps up to
/// `g` (a line that is not a record is kept with its neighbours).
fn lines_up_to(path: &Path, g: u64) -> std::io::Result<u64> {
    use std::io::BufRead;
    let file = crate::files::open_input(path)?;
    let mut reader = std::io::BufReader::new(file);
    let (mut at, mut line) = (0u64, String::new());
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            return Ok(at);
        }
        let step = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["global_step"].as_u64());
        if step.is_some_and(|s| s > g) {
            return Ok(at);
        }
        at += n as u64;
    }
}

/// The longest metrics file `plot` reads: a line a step for a million steps, and more.
pub const MAX_METRICS_BYTES: u64 = 512 << 20;

/// Reads a metrics file back, every field of every record.
pub fn read(path: &Path) -> Result<Vec<serde_json::Value>> {
    read_lines(path)
}

/// What `plot` draws of one record; the rest of each line is skipped as it is parsed, so a
/// long file costs a few words a record, not its parsed JSON.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Point {
    #[serde(default)]
    pub kind: PointKind,
    pub epoch: Option<f64>,
    pub global_step: Option<f64>,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointKind {
    Step,
    Epoch,
    #[serde(other)]
    #[default]
    Other,
}

/// The records of a metrics file, as `plot` draws them.
pub fn read_points(path: &Path) -> Result<Vec<Point>> {
    read_lines(path)
}

/// Parses every line of a metrics file as a `T`.
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    use std::io::BufRead;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Read line by line, never more than a long run's metrics can be (the whole text is
    // never held beside the records parsed from it).
    let file = crate::files::open_input(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_METRICS_BYTES {
        return Err(Error::bad_data(
            path.display().to_string(),
            format!("it is {len} bytes, more than gpu-train reads as metrics ({MAX_METRICS_BYTES} bytes)"),
        ));
    }
    let reader = std::io::BufReader::new(std::io::Read::take(file, MAX_METRICS_BYTES));
    let mut records = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        // A record is a JSON object (serde would also read a struct from an array).
        let bad = |why: String| {
            Error::bad_data(
                path.display().to_string(),
                format!("line {}: not a metrics record: {why}", i + 1),
            )
        };
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if !value.is_object() {
            return Err(bad("a record is a JSON object".into()));
        }
        records.push(serde_json::from_value(value).map_err(|e| bad(e.to_string()))?);
    }
    Ok(records)
}
