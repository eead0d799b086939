//! Reading input files safely: only regular files, never more than they may hold.
//!
//! A path a user gives may name a FIFO (the open, or the reads, block forever), a character
//! device (`/dev/zero` reads without end) or a folder; and a file's own header may claim any
//! size. Every file a user can name (or put in gpu-train's way) is read through [`open_input`] or
//! [`read_input`]; only fixed system files (/proc, /sys) are read directly.

use std::fs::{self, File};
use std::io::Read;
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
