//! Reading input files safely: only regular files, never more than they may hold.
//!
//! A path a user gives may name a FIFO (the open, or the reads, block forever), a character
//! device (`/dev/zero` reads without end) or a folder; and a file's own header may claim any
//! size. Every file a user can name (or put in gpu-train's way) is read through [`open_input`] or
//! [`read_input`]; only fixed system files (/proc, /sys) are read directly.

use std::fs::{self, File};
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::path::Path;

/// A sibling of `path` in its folder, named `prefix` + its name (a temporary beside the file it
/// becomes): a bare file name's folder is the current one.
pub fn beside(path: &Path, prefix: &str) -> std::path::PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!("{prefix}{name}"))
}

/// Opens `path` for reading only if it is a regular file (a symbolic link to one is followed):
/// a FIFO would block the open or its reads forever, and a character device such as
/// `/dev/zero` reads without end. The open does not block on a FIFO (O_NONBLOCK, which means
/// nothing for a regular file), and the check is made on the file opened, so nothing can be
/// swapped in between.
pub fn open_input(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", file_kind(&m)),
        ));
    }
    Ok(file)
}

/// Reads the whole of the regular file at `path` ([`open_input`]), refusing one longer than
/// `limit` bytes, the most such a file may hold: a file's claim never sizes an allocation.
pub fn read_input(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = open_input(path)?;
    let too_long = |len: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is {len} bytes, more than such a file can hold ({limit} bytes)"),
        )
    };
    let len = file.metadata()?.len();
    if len > limit {
        return Err(too_long(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_long(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_input`] as UTF-8 text.
pub fn read_input_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_input(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// What a non-regular file is, in words.
pub fn file_kind(m: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// What a command will write, for [`check_paths`].
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// One file, named by `flag`.
    File(&'a str, &'a Path),
    /// The snapshot folder: gpu-train's own (`--keep` deletes there, a resume moves files aside).
    Snapshots(&'a Path),
    /// A folder of pictures, named by `flag`: every `.png` and `.svg` there may be replaced.
    Pictures(&'a str, &'a Path),
}

/// `path` made absolute with its links resolved, also for a file that does not exist yet (its
/// folder resolved, its name kept): two spellings of one file compare equal.
fn resolved(path: &Path) -> std::path::PathBuf {
    if let Ok(p) = fs::canonicalize(path) {
        return p;
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// Whether `a` and `b` are one file: the same inode on the same device (a hard link, a
/// symbolic link, `./x` and `x`), or, where one does not exist yet, the same resolved path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => resolved(a) == resolved(b),
    }
}

/// Whether `path` lies inside the folder `dir` (at any depth).
fn inside(path: &Path, dir: &Path) -> bool {
    resolved(path).starts_with(resolved(dir))
}

fn is_picture(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png") || e.eq_ignore_ascii_case("svg"))
}

/// The one check of a command's paths, before anything is written: no output is one of the
/// command's inputs (`--trace w.safetensors` beside `--init w.safetensors` would replace the
/// weights), no two outputs are one file, no output file lies in the snapshot folder (the
/// rotation of `--keep` would delete it), and no input or output file is a picture in a
/// pictures folder (it would be drawn over). `inputs` are (flag, path) pairs; an input that
/// does not exist is the reader's to refuse.
pub fn check_paths(inputs: &[(&str, &Path)], outputs: &[Output]) -> crate::error::Result<()> {
    let refuse = |m: String| Err(crate::error::Error::Config(m));
    let files: Vec<(&str, &Path)> = outputs
        .iter()
        .filter_map(|o| match *o {
            Output::File(flag, p) => Some((flag, p)),
            _ => None,
        })
        .collect();
    for (i, &(flag, out)) in files.iter().enumerate() {
        for &(in_flag, input) in inputs {
            if same_file(out, input) {
                return refuse(format!(
                    "{flag} {} is the file {in_flag} reads ({}): writing it would destroy the run's own input; give {flag} another file",
                    out.display(),
                    input.display()
                ));
            }
        }
        for &(other_flag, other) in &files[..i] {
            if same_file(out, other) {
                return refuse(format!(
                    "{other_flag} and {flag} name the same file ({}): give each its own",
                    out.display()
                ));
            }
        }
    }
    for o in outputs {
        match *o {
            Output::Snapshots(dir) => {
                if let Some((flag, out)) = files.iter().find(|(_, p)| inside(p, dir)) {
                    return refuse(format!(
                        "{flag} {} is inside the snapshot folder {}, whose files gpu-train rotates (--keep deletes the oldest): write it elsewhere",
                        out.display(),
                        dir.display()
                    ));
                }
            }
            Output::Pictures(flag, dir) => {
                let named = inputs.iter().chain(files.iter());
                if let Some((which, p)) = named
                    .filter(|(_, p)| is_picture(p))
                    .find(|(_, p)| inside(p, dir))
                {
                    return refuse(format!(
                        "{which} {} is a picture inside {flag} {}, where this command writes its pictures: choose another {flag}",
                        p.display(),
                        dir.display()
                    ));
                }
            }
            Output::File(..) => {}
        }
    }
    Ok(())
}

/// The prefix of the temporary file a write goes through before its rename (the snapshot
/// folder's cleanup recognises it).
pub const TEMP_PREFIX: &str = ".tmp-snapshot-";

/// Refuses an output path where something other than a regular file stands: the atomic
/// rename would replace it (as root, `--trace /dev/null` would replace the machine's
/// /dev/null with a regular file), and a symlink would be replaced rather than followed.
pub fn check_writable(path: &Path, what: &str) -> Result<()> {
    let kind = match fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.file_type().is_file() => return Ok(()),
        Ok(m) => file_kind(&m),
    };
    Err(Error::Config(format!(
        "{}: {kind}, not a regular file: gpu-train writes {what} only to a new or regular file",
        path.display()
    )))
}

/// Writes `bytes` to `path` atomically (checkpoint::write_atomic's way, for any file) (`what` names it in errors; `kept` says what is unharmed).
pub fn write_file(path: &Path, bytes: &[u8], what: &str, kept: &str) -> Result<()> {
    write_file_with(path, what, kept, |f| f.write_all(bytes))
}

/// [`write_file`] with the content written by `fill` (a long trace streamed from its spool,
/// never held in memory whole).
pub fn write_file_with(
    path: &Path,
    what: &str,
    kept: &str,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    check_writable(path, what)?;
    let temp = beside(path, &format!("{TEMP_PREFIX}{}-", std::process::id()));
    // The folder, to fsync after the rename (a bare file name's is the current one).
    let dir = temp.parent().unwrap_or(Path::new("."));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(File::create(&temp)?);
        fill(&mut f)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&temp, path)?;
        // The rename is an entry in the folder: fsync the folder so it survives a power loss.
        File::open(dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        Error::Write {
            path: path.to_path_buf(),
            fault: format!("cannot write {what}: {e}; {kept}"),
        }
    })
}
