//! `--tensorboard DIR`: the run's metrics as a TensorBoard event file, to watch a run live
//! with `tensorboard --logdir DIR`.
//!
//! The values are the `--metrics` records' own (the same [`Record`]s and [`EpochReport`]s, at
//! the same global steps); the step of every scalar is the global step.
//! * every metrics window (`--metrics-every` steps): `train/loss`, `train/accuracy` (%), and
//!   the window's bytes per replica, `bytes/staged`, `bytes/allreduce_sent`, `bytes/read_back`;
//! * every epoch: `epoch/train_loss`, `epoch/train_accuracy`, `test/loss`, `test/accuracy`,
//!   `epoch/images_per_s`, `epoch/time_s`, the epoch's bytes (`epoch/staged_bytes`,
//!   `epoch/allreduce_sent_bytes`, `epoch/read_back_bytes`) and, on the data-parallel step,
//!   `epoch/allreduce_s` (the seconds spent in the all-reduce, the step's sync).
//!
//! The file is TensorFlow's record format, written here rather than through a crate (the one
//! crate, tensorboard-rs, pulls in protobuf 2 and image 0.23 for these few bytes). A file is a
//! sequence of records:
//! ```text
//! u64 length (little-endian) | masked CRC-32C of those 8 bytes | data | masked CRC-32C of data
//! ```
//! each data an `Event` protobuf: `wall_time` (double, field 1), `step` (int64, field 2), and
//! either `file_version` (string, field 3: "brain.Event:2", the first record) or `summary`
//! (field 5: `Summary { repeated Value value = 1 }`, `Value { string tag = 1; float
//! simple_value = 2 }`).

use crate::error::{Error, Result};
use crate::train::report::{EpochReport, Observer, Record};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The open event file.
pub struct TensorBoard {
    pub path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

/// Refuses a `--tensorboard` that names something other than a folder, before the run starts.
pub fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Error::Config(format!(
            "--tensorboard {}: not a folder; TensorBoard reads a folder of event files (it is made when missing)",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

impl TensorBoard {
    /// Makes `dir` if needed and starts a new event file there,
    /// `events.out.tfevents.<unix seconds>.<hostname>`, with its `brain.Event:2` record. A
    /// resumed run starts a file of its own beside the first run's: TensorBoard reads them
    /// all as one run.
    pub fn create(dir: &Path) -> Result<TensorBoard> {
        let refuse = |e: String| Error::Config(format!("--tensorboard {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| refuse(format!("cannot make the folder: {e}")))?;
        let name = format!("events.out.tfevents.{}.{}", unix_now() as u64, hostname());
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
        };
        let mut path = dir.join(&name);
        // Two runs started in one second on one host: the second adds its process id.
        let file = match open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                path = dir.join(format!("{name}.{}", std::process::id()));
                open(&path)
            }
            other => other,
        }
        .map_err(|e| refuse(format!("cannot create {}: {e}", path.display())))?;
        let mut board = TensorBoard {
            path,
            file: std::io::BufWriter::new(file),
        };
        board.write_event(&event(unix_now(), 0, Content::FileVersion("brain.Event:2")))?;
        Ok(board)
    }

    /// One event at global step `step` holding the scalars `values` (tag, value).
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let summary = summary(values);
        self.write_event(&event(unix_now(), step, Content::Summary(&summary)))
    }

    /// A metrics window (a `kind: "step"` record).
    pub fn record(&mut self, r: &Record) -> Result<()> {
        self.scalars(
            r.global_step,
            &[
                ("train/loss", r.train_loss),
                ("train/accuracy", r.train_accuracy),
                ("bytes/staged", r.staged_bytes as f64),
                ("bytes/allreduce_sent", r.allreduce_sent_bytes as f64),
                ("bytes/read_back", r.readback_bytes as f64),
            ],
        )
    }

    /// An epoch: the values of its metrics record, its speed and its all-reduce time.
    pub fn epoch(&mut self, report: &EpochReport) -> Result<()> {
        let r = report.record();
        let mut values = vec![
            ("epoch/train_loss", r.train_loss),
            ("epoch/train_accuracy", r.train_accuracy),
            ("test/loss", r.test_loss.unwrap_or(f64::NAN)),
            ("test/accuracy", r.test_accuracy.unwrap_or(f64::NAN)),
            ("epoch/images_per_s", report.images_per_sec()),
            ("epoch/time_s", report.train_time.as_secs_f64()),
            ("epoch/staged_bytes", r.staged_bytes as f64),
            ("epoch/allreduce_sent_bytes", r.allreduce_sent_bytes as f64),
            ("epoch/read_back_bytes", r.readback_bytes as f64),
        ];
        if let Some(split) = report.split {
            values.push(("epoch/allreduce_s", split.all_reduce.as_secs_f64()));
        }
        self.scalars(r.global_step, &values)
    }

    /// Frames `data` as a record and flushes it, so a TensorBoard watching the folder sees it.
    fn write_event(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut framed = Vec::with_capacity(data.len() + 16);
        framed.extend_from_slice(&len);
        framed.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        framed.extend_from_slice(data);
        framed.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.file
            .write_all(&framed)
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::Write {
                path: self.path.clone(),
                fault: format!("cannot write the TensorBoard events: {e}"),
            })
    }
}

/// The observer of a run with `--tensorboard`: everything goes on to `inner` (the console,
/// which writes `--metrics`), and the records go into the event file as well.
pub struct WithTensorBoard<'a> {
    pub inner: &'a mut dyn Observer,
    pub board: Option<TensorBoard>,
    /// Steps between two metrics windows when `inner` asks for none (no `--metrics`).
    pub every: u64,
    /// A write that failed (reported when training returns).
    pub failed: Option<Error>,
}

impl WithTensorBoard<'_> {
    fn keep(&mut self, written: Result<()>) {
        if let Err(e) = written {
            self.failed.get_or_insert(e);
        }
    }
}

impl Observer for WithTensorBoard<'_> {
    fn metrics_every(&self) -> u64 {
        match (self.inner.metrics_every(), &self.board) {
            (0, Some(_)) => self.every,
            (k, _) => k,
        }
    }
    fn record(&mut self, record: &Record) {
        self.inner.record(record);
        if let Some(b) = &mut self.board {
            let written = b.record(record);
            self.keep(written);
        }
    }
    fn step(&mut self, epoch: usize, step: usize, steps: usize) {
        self.inner.step(epoch, step, steps);
    }
    fn epoch(&mut self, report: &EpochReport) {
        self.inner.epoch(report);
        if let Some(b) = &mut self.board {
            let written = b.epoch(report);
            self.keep(written);
        }
    }
}

/// What an event holds besides its time and step.
enum Content<'a> {
    FileVersion(&'a str),
    /// An encoded `Summary`.
    Summary(&'a [u8]),
}

/// An `Event` protobuf.
fn event(wall_time: f64, step: u64, content: Content) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(1 << 3 | FIXED64);
    e.extend_from_slice(&wall_time.to_le_bytes());
    e.push(2 << 3 | VARINT);
    varint(&mut e, step);
    match content {
        Content::FileVersion(v) => bytes_field(&mut e, 3, v.as_bytes()),
        Content::Summary(s) => bytes_field(&mut e, 5, s),
    }
    e
}

/// A `Summary` of scalars: one `Value { tag, simple_value }` each (a float: TensorBoard's
/// scalars are f32).
fn summary(values: &[(&str, f64)]) -> Vec<u8> {
    let mut s = Vec::new();
    for (tag, v) in values {
        let mut value = Vec::new();
        bytes_field(&mut value, 1, tag.as_bytes());
        value.push(2 << 3 | FIXED32);
        value.extend_from_slice(&(*v as f32).to_le_bytes());
        bytes_field(&mut s, 1, &value);
    }
    s
}

// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

/// A length-delimited field (a string, bytes or a nested message); fields here are < 16.
fn bytes_field(out: &mut Vec<u8>, field: u8, data: &[u8]) {
    out.push(field << 3 | LENGTH_DELIMITED);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Seven bits a byte, least significant first, the top bit saying "more follows".
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// CRC-32C (Castagnoli: the reflected polynomial 0x82F63B78), a byte at a time through a
/// 256-entry table. A few hundred bytes an event: no need for the SSE4.2 instruction that the
/// `crc32c` crate uses (and its build script).
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TensorFlow's mask over a record's CRCs (so a CRC of data that holds CRCs stays strong).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name, as TensorFlow puts it in the file's name (characters a file name
/// cannot hold replaced).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ok && !name.is_empty() {
        name
    } else {
        "localhost".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of CRC-32C (RFC 3720's iSCSI CRC), and of its mask.
    #[test]
    fn crc32c_of_the_check_string() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        let crc = 0xE306_9283u32;
        assert_eq!(
            masked_crc32c(b"123456789"),
            ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn varints_as_protobuf_writes_them() {
        let enc = |v| {
            let mut o = Vec::new();
            varint(&mut o, v);
            o
        };
        assert_eq!(enc(1), [1]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
    }
}
