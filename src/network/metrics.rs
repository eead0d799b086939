//! `--metrics FILE.jsonl`: one JSON object a line, for plotting or any other tool.
//!
//! The first line is the run record (`kind` "run"), what produced the numbers below it:
//! `version` (the crate's) and `commit` (the git commit it was built from, "unknown" outside
//! a checkout), `started_unix_s` and `started_utc` (RFC 3339), `config` (the start-up line's
//! configuration) and `run_config` (the whole validated configuration, Rust's `Debug` form),
//! `engine` (adapters, driver and the matmul kernels picked, as the start-up's engine line),
//! `arithmetic` (what sets the rounding), `global_step` (where the run starts: 0, or the
//! resumed step) and `command_line`. A resumed run adds its own run record where its records
//! begin.
//!
//! Every later record carries `unix_time` (wall-clock seconds when it was written) and has `kind` ("step" or "epoch"), `epoch`, `global_step`, `replicas`,
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

    /// The run record (see the module doc); the first line of a new file.
    pub fn write_run(&mut self, run: &RunInfo) -> Result<()> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let value = serde_json::json!({
            "kind": "run",
            "version": VERSION,
            "commit": COMMIT,
            "started_unix_s": started,
            "started_utc": rfc3339_utc(started),
            "config": run.config,
            "run_config": run.run_config,
            "engine": run.engine,
            "arithmetic": run.arithmetic,
            "global_step": run.global_step,
            "command_line": std::env::args().collect::<Vec<_>>(),
        });
        self.write_line(&value)
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        let mut value = serde_json::to_value(r).expect("a record serialises");
        value["unix_time"] = serde_json::json!(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()));
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
        self.write_line(&value)
    }

    fn write_line(&mut self, value: &serde_json::Value) -> Result<()> {
        let line = value.to_string();
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::Write {
                path: self.path.clone(),
                fault: format!("cannot write the metrics: {e}"),
            })
    }
}

/// The crate's version and the git commit it was built from (build.rs; "unknown" outside a
/// git checkout).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("GPU_TRAIN_COMMIT");

/// What the run record says about the run (the rest it finds itself).
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The configuration as the start-up line prints it.
    pub config: String,
    /// The whole validated configuration (`RunConfig`'s `Debug`).
    pub run_config: String,
    /// The engine line: adapters, driver, the kernels picked.
    pub engine: String,
    pub arithmetic: String,
    /// Where the run starts (0, or the step it resumes after).
    pub global_step: u64,
}

impl RunInfo {
    /// The run about to start at `start` on `replicas`.
    pub fn of(
        run: &crate::config::RunConfig,
        replicas: &crate::train::replicas::Replicas,
        start: crate::train::Start,
    ) -> RunInfo {
        RunInfo {
            config: run.describe(replicas.world()),
            run_config: format!("{run:?}"),
            engine: replicas.describe(true).join("\n"),
            arithmetic: replicas.arithmetic(),
            global_step: start.global_step,
        }
    }
}

/// `secs` after the Unix epoch as RFC 3339 in UTC ("1970-01-01T00:00:00Z"): the civil date
/// of a day count, by Howard Hinnant's `civil_from_days` (eras of 400 years, March first).
pub fn rfc3339_utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339_utc(0), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400`: the leap day of a year divisible by 400.
        assert_eq!(super::rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
