//! One error type for the whole library. Every message says what went wrong and,
//! where there is one, what the user can do about it.

use std::path::PathBuf;

/// Everything gpu-train can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file could not be opened or read at all.
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data file was read but its contents are not a valid MNIST IDX file.
    #[error("{file}: {fault}")]
    BadData { file: String, fault: String },

    /// A flag or configuration value that cannot work.
    #[error("{0}")]
    Config(String),

    /// No usable GPU adapter, or the one asked for does not exist.
    #[error("{0}")]
    Adapter(String),

    /// The GPU device failed while training (lost device, out of memory, validation error).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// Training produced a non-finite loss or weights: the learning rate is too high.
    #[error("training diverged at epoch {epoch}, step {step}: {what}; lower --lr (the default is 0.1); snapshots already written are left as they were")]
    Diverged {
        epoch: usize,
        step: usize,
        what: String,
    },

    /// A message of the all-reduce was lost or damaged: the step cannot be completed.
    #[error("{0}")]
    LinkFault(String),

    /// Stopped by the user (Ctrl-C) between two steps.
    #[error("{0}")]
    Interrupted(String),

    /// Data-parallel replicas that no longer agree (a bug, or a fault on the way).
    #[error("{0}")]
    Replicas(String),

    /// A snapshot folder that cannot be used, or a snapshot that is damaged or does not fit.
    #[error("{path}: {fault}")]
    Snapshot { path: PathBuf, fault: String },

    /// Writing a snapshot failed (disk full, I/O error) while training.
    #[error("{path}: {fault}")]
    Write { path: PathBuf, fault: String },
}

impl Error {
    /// The process's exit code for this error. 2: the input was wrong (flags, data, adapter
    /// choice); 1: something failed while running; 3: the network failed the run (a lost or
    /// damaged message: resume from a snapshot); 130: stopped by Ctrl-C (128 + SIGINT, the
    /// shell's code).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted(_) => 130,
            Error::LinkFault(_) => 3,
            Error::Config(_)
            | Error::BadData { .. }
            | Error::Io { .. }
            | Error::Adapter(_)
            | Error::Snapshot { .. } => 2,
            _ => 1,
        }
    }

    /// A snapshot fault at `path`.
    pub fn snapshot(path: impl Into<PathBuf>, fault: impl Into<String>) -> Self {
        Error::Snapshot {
            path: path.into(),
            fault: fault.into(),
        }
    }

    /// A data fault in the named file.
    pub fn bad_data(file: impl Into<String>, fault: impl Into<String>) -> Self {
        Error::BadData {
            file: file.into(),
            fault: fault.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Prints `gpu-train: LINE` on standard error in one write: the ranks of an MPI job share one
/// stderr, and `eprintln!` writes a formatted line in pieces that another rank's pieces can
/// land between.
pub fn say_error(line: &str) {
    use std::io::Write as _;
    let whole = format!("gpu-train: {line}\n");
    let _ = std::io::stderr().lock().write_all(whole.as_bytes());
}
