//! A folder of snapshots ([`SnapshotDir`]): where a run's snapshots go, their names, how many
//! are kept, the lock that keeps a second run out, and which one a resume takes. What a
//! snapshot holds, and how it is written and read, is src/checkpoint.rs.

use crate::checkpoint::{encode, write_atomic, TrainState, PREFIX, SUFFIX};
use crate::error::{Error, Result};
use crate::model::Model;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A folder of snapshots: where they go, how many to keep. While one is open, its run holds
/// an exclusive lock on `DIR/.lock` (released by the OS when the process ends, however it
/// ends), so a second run on the same folder is refused before it touches anything.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    pub dir: PathBuf,
    /// Keep this many of the most recent snapshots (at least 1).
    pub keep: usize,
    _lock: std::sync::Arc<File>,
}

/// The lock file's name in a snapshot folder.
pub const LOCK_FILE: &str = ".lock";

/// The step of a snapshot file name, `snapshot-<digits>.safetensors`, and nothing else (no
/// sign, no spaces: `snapshot-+99.safetensors` is not a snapshot).
fn snapshot_step(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The latest snapshot in `dir`, found by listing it, without taking its lock (an MPI rank that
/// only reads the snapshot rank 0 will resume from).
pub fn latest_in(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::snapshot(dir, format!("cannot list: {e}"))),
    };
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let step = snapshot_step(&e.file_name().to_string_lossy())?;
            e.path().is_file().then(|| (step, e.path()))
        })
        .max()
        .map(|(_, p)| p))
}

/// Whether `name` is a temporary file a gpu-train run writes: `.tmp-snapshot-<pid>-<snapshot
/// name>`. Anything else starting with `.tmp-snapshot-` is a user's file and stays.
fn is_our_temp(name: &str) -> bool {
    name.strip_prefix(crate::files::TEMP_PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, snap)| {
            !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && snapshot_step(snap).is_some()
        })
}

impl SnapshotDir {
    /// Opens (creating it if needed) a snapshot folder and locks it for this run (which also
    /// checks it is writable); then removes temporary files a crashed run left. Refused, with
    /// nothing touched, while another run holds the folder.
    pub fn open(dir: &Path, keep: usize) -> Result<Self> {
        let fail = |what: &str, e: std::io::Error| {
            Error::snapshot(
                dir,
                format!("cannot {what}: {e}; choose another --snapshot-dir"),
            )
        };
        if keep == 0 {
            return Err(Error::Config(
                "--keep must be at least 1: a run always keeps its newest snapshot".into(),
            ));
        }
        fs::create_dir_all(dir).map_err(|e| fail("create the snapshot folder", e))?;
        let lock_path = dir.join(LOCK_FILE);
        // The lock is opened without following a link (O_NOFOLLOW: a `.lock` that is a symbolic
        // link must not have its target truncated) and must be a regular file (O_NONBLOCK: a
        // FIFO there fails the open instead of blocking it).
        if let Ok(m) = fs::symlink_metadata(&lock_path) {
            if !m.is_file() {
                return Err(Error::snapshot(
                    &lock_path,
                    format!("it is {}, not the regular lock file gpu-train keeps there; remove it or choose another --snapshot-dir", crate::files::file_kind(&m)),
                ));
            }
        }
        let lock = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&lock_path)
                .map_err(|e| fail("write in the snapshot folder", e))?
        };
        if !lock.metadata().is_ok_and(|m| m.is_file()) {
            return Err(Error::snapshot(
                &lock_path,
                "it is not a regular file; remove it or choose another --snapshot-dir",
            ));
        }
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Config(format!(
                    "{}: another gpu-train run is using this snapshot folder (it holds {}); wait for it to end, or choose another --snapshot-dir",
                    dir.display(),
                    lock_path.display()
                )))
            }
            Err(fs::TryLockError::Error(e)) => return Err(fail("lock the snapshot folder", e)),
        }
        // Ours now: say who holds it, for a user who looks.
        let _ = lock
            .set_len(0)
            .and_then(|_| (&lock).write_all(format!("{}\n", std::process::id()).as_bytes()));
        for entry in fs::read_dir(dir)
            .map_err(|e| fail("list the snapshot folder", e))?
            .flatten()
        {
            // With the lock held, no other run is writing here: these are a dead run's.
            if is_our_temp(&entry.file_name().to_string_lossy()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
            keep,
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// Moves the snapshots taken after global step `step` into a subfolder, so that a run
    /// resumed from an older snapshot (after a divergence, say) neither mixes its files with
    /// the abandoned run's nor has `--keep` delete its own new ones. Returns the subfolder and
    /// the steps moved, if any.
    pub fn set_aside_after(&self, step: u64) -> Result<Option<(PathBuf, Vec<u64>)>> {
        let newer: Vec<(u64, PathBuf)> = self
            .list()?
            .into_iter()
            .filter(|(s, _)| *s > step)
            .collect();
        if newer.is_empty() {
            return Ok(None);
        }
        let mut aside = self.dir.join(format!("superseded-after-step-{step}"));
        let mut n = 1;
        while aside.exists() {
            n += 1;
            aside = self.dir.join(format!("superseded-after-step-{step}-{n}"));
        }
        let fail = |e: std::io::Error| {
            Error::snapshot(&aside, format!("cannot move newer snapshots aside: {e}"))
        };
        fs::create_dir(&aside).map_err(fail)?;
        for (_, p) in &newer {
            fs::rename(p, aside.join(p.file_name().expect("a file"))).map_err(fail)?;
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
        Ok(Some((aside, newer.into_iter().map(|(s, _)| s).collect())))
    }

    /// The snapshots in the folder, oldest first, by global step.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut found = Vec::new();
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::snapshot(&self.dir, format!("cannot list: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(step) = snapshot_step(&name) {
                if entry.path().is_file() {
                    found.push((step, entry.path()));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// The most recent snapshot, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop().map(|(_, p)| p))
    }

    /// Writes a snapshot atomically, then removes the oldest beyond `keep`.
    pub fn save(&self, model: &Model, state: &TrainState) -> Result<PathBuf> {
        let bytes = encode(model, state)?;
        let path = self
            .dir
            .join(format!("{PREFIX}{:09}{SUFFIX}", state.global_step));
        write_atomic(&path, &bytes)?;
        let all = self.list()?;
        if all.len() > self.keep {
            for (_, old) in &all[..all.len() - self.keep] {
                let _ = fs::remove_file(old);
            }
        }
        Ok(path)
    }
}

