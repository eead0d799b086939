//! The IDX file format that MNIST is distributed in, raw or gzip'd.
//!
//! An IDX file is a big-endian header followed by a dense payload of u8:
//! ```text
//! images: magic 0x00000803, count, rows, cols, then count*rows*cols pixels
//! labels: magic 0x00000801, count, then count labels
//! ```
//! The parser trusts nothing: every count comes from the header and is checked against the
//! bytes actually present (for a raw file, against its size before anything is allocated; for
//! gzip, by inflating no more than the header promises), and a fault becomes an
//! [`Error::BadData`] naming the file.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// gzip streams start with these two bytes (RFC 1952), whatever the file is called.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// No real IDX file is larger than this (60,000 MNIST images are 47 MB); gpu-train reads no more.
const MAX_DECODED_BYTES: u64 = 1 << 31;

/// Images as stored: `count` images of `rows*cols` u8 pixels, row-major, one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// How a file is stored, with its size on disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stored {
    Raw(u64),
    Gzip(u64),
}

/// Image and label data inflate from gzip by a few times (MNIST's images 4.7×, its labels
/// 2.1×): a gzip stream claiming more than this many times its size is not such data (a bomb,
/// or a header that lies), and is refused before anything is inflated, past the first
/// [`ALWAYS_INFLATED`] bytes, which any file may hold.
pub const MAX_GZIP_RATIO: u64 = 100;
pub const ALWAYS_INFLATED: u64 = 64 << 20;

/// Opens a file for reading, decompressing it on the fly when it is gzip'd (detected by
/// content, whatever its name; several concatenated gzip members, as `cat a.gz b.gz` makes,
/// are one stream). Returns the reader and how the file is stored.
pub fn open(path: &Path) -> Result<(Box<dyn Read>, Stored)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = crate::files::open_input(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(file);
    let is_gzip = reader.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC);
    Ok(if is_gzip {
        (Box::new(MultiGzDecoder::new(reader)), Stored::Gzip(size))
    } else {
        (Box::new(reader), Stored::Raw(size))
    })
}

/// Reads a whole file, decompressing it if it is gzip'd (at most 2 GiB).
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let (reader, _) = open(path)?;
    let mut out = Vec::new();
    reader
        .take(MAX_DECODED_BYTES)
        .read_to_end(&mut out)
        .map_err(|e| Error::bad_data(display_name(path), format!("cannot read: {e}")))?;
    Ok(out)
}

/// The file's name as errors show it.
pub fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Returns the bytes unchanged unless they start with the gzip magic, then decodes them.
pub fn decompress_if_gzip(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes)
        .take(MAX_DECODED_BYTES)
        .read_to_end(&mut out)
        .map_err(|e| Error::bad_data(name, format!("corrupt or truncated gzip stream: {e}")))?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads as many bytes as `r` has, up to `buf.len()`; returns how many.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8], name: &str) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gzip_fault(name, e)),
        }
    }
    Ok(n)
}

fn gzip_fault(name: &str, e: std::io::Error) -> Error {
    Error::bad_data(name, format!("corrupt or truncated gzip stream: {e}"))
}

/// Reads and checks an IDX header of `N` bytes (magic first).
fn header<const N: usize>(r: &mut dyn Read, name: &str, magic: u32, what: &str) -> Result<[u8; N]> {
    let mut h = [0u8; N];
    let got = read_up_to(r, &mut h, name)?;
    if got < N {
        return Err(Error::bad_data(
            name,
            format!("file is {got} bytes, too short for an IDX {what} header ({N} bytes)"),
        ));
    }
    let found = be_u32(&h, 0);
    if found != magic {
        return Err(Error::bad_data(
            name,
            format!("magic number is 0x{found:08x}, expected 0x{magic:08x} for IDX {what}"),
        ));
    }
    Ok(h)
}

/// Reads the payload: `count` items of `item` bytes, of which only the first `keep` are
/// wanted. A raw file's size is checked against the header's promise before anything is
/// allocated; a gzip file's size bounds what it may inflate to ([`MAX_GZIP_RATIO`]). For gzip,
/// inflating stops at what is wanted (or, when everything is wanted, one byte past the
/// promise, to notice a longer stream): a header that lies, or a bomb behind a valid header,
/// costs no more than the bytes it claims, and it may claim no more than its size allows.
fn payload(
    r: &mut dyn Read,
    stored: Stored,
    (count, item, keep): (u64, u64, u64),
    header_len: u64,
    name: &str,
    (what, hint): (&str, &str),
) -> Result<Vec<u8>> {
    // u128: three u32 header fields multiplied can overflow u64.
    let expected = count as u128 * item as u128;
    // Labels are one byte each: their count is their size.
    let (promised, unit) = if item == 1 {
        (String::new(), "")
    } else {
        (format!(" ({expected} bytes)"), " bytes")
    };
    let promise = |held: String| {
        Error::bad_data(
            name,
            format!("header says {count} {what}{promised} but the file holds {held}"),
        )
    };
    let want = keep.min(count) as u128 * item as u128;
    let size = match stored {
        Stored::Raw(size) => {
            let held = size.saturating_sub(header_len);
            if held as u128 != expected {
                return Err(promise(format!("{held}{unit}")));
            }
            Some(size)
        }
        Stored::Gzip(gz) => {
            let most = (gz as u128 * MAX_GZIP_RATIO as u128).max(ALWAYS_INFLATED as u128);
            if want > most {
                return Err(Error::bad_data(
                    name,
                    format!(
                        "header says {count} {what}{promised} to read, but the gzip file is {gz} bytes: \
                         image data does not inflate {MAX_GZIP_RATIO}× (a damaged file, or a gzip bomb){hint}"
                    ),
                ));
            }
            None
        }
    };
    if want > MAX_DECODED_BYTES as u128 {
        return Err(Error::bad_data(
            name,
            format!(
                "header says {count} {what} ({want} bytes to read), more than gpu-train reads ({MAX_DECODED_BYTES} bytes){hint}"
            ),
        ));
    }
    let want = want as u64;
    let mut out = Vec::with_capacity(want.min(64 << 20) as usize);
    r.take(want)
        .read_to_end(&mut out)
        .map_err(|e| match stored {
            Stored::Gzip(_) => gzip_fault(name, e),
            Stored::Raw(_) => Error::bad_data(name, format!("cannot read: {e}")),
        })?;
    if (out.len() as u64) < want {
        return Err(promise(format!("{}{unit}", out.len())));
    }
    if want as u128 == expected && size.is_none() {
        let mut extra = [0u8; 1];
        if read_up_to(r, &mut extra, name)? > 0 {
            return Err(promise(format!("more than {want}{unit}")));
        }
    }
    Ok(out)
}

/// An IDX file opened with its header read and checked, its payload not yet read: a pair of
/// files is compared by their headers before either payload costs memory.
pub struct IdxFile<'a> {
    r: Box<dyn Read + 'a>,
    stored: Stored,
    pub name: String,
    /// Items the header promises (images or labels), and bytes an item.
    pub count: u64,
    item: u64,
    /// An image's rows and columns (1 × 1 for labels).
    pub rows: usize,
    pub cols: usize,
    header_len: u64,
}

impl<'a> IdxFile<'a> {
    /// Opens an IDX image file, raw or gzip'd, and reads its header.
    pub fn images(path: &Path) -> Result<IdxFile<'static>> {
        let (r, stored) = open(path)?;
        IdxFile::images_from(r, stored, display_name(path))
    }

    /// Opens an IDX label file, raw or gzip'd, and reads its header.
    pub fn labels(path: &Path) -> Result<IdxFile<'static>> {
        let (r, stored) = open(path)?;
        IdxFile::labels_from(r, stored, display_name(path))
    }

    fn images_from(mut r: Box<dyn Read + 'a>, stored: Stored, name: String) -> Result<Self> {
        let h: [u8; 16] = header(&mut r, &name, IMAGES_MAGIC, "images")?;
        let (count, rows, cols) = (be_u32(&h, 4), be_u32(&h, 8), be_u32(&h, 12));
        if rows == 0 || cols == 0 {
            return Err(Error::bad_data(
                name,
                format!("image size is {rows}x{cols}"),
            ));
        }
        Ok(IdxFile {
            r,
            stored,
            name,
            count: count as u64,
            item: rows as u64 * cols as u64,
            rows: rows as usize,
            cols: cols as usize,
            header_len: 16,
        })
    }

    fn labels_from(mut r: Box<dyn Read + 'a>, stored: Stored, name: String) -> Result<Self> {
        let h: [u8; 8] = header(&mut r, &name, LABELS_MAGIC, "labels")?;
        Ok(IdxFile {
            r,
            stored,
            name,
            count: be_u32(&h, 4) as u64,
            item: 1,
            rows: 1,
            cols: 1,
            header_len: 8,
        })
    }

    /// Reads the first `keep` items' bytes (all if more); `hint` ends a refusal of a file
    /// too large to read (what the user can do about it).
    pub fn read(mut self, keep: u64, hint: &str) -> Result<Vec<u8>> {
        let keep = keep.min(self.count);
        let what = if self.item == 1 {
            "labels".to_string()
        } else {
            format!("images of {}x{}", self.rows, self.cols)
        };
        let bytes = payload(
            &mut self.r,
            self.stored,
            (self.count, self.item, keep),
            self.header_len,
            &self.name,
            (&what, hint),
        )?;
        if self.item == 1 {
            if let Some(i) = bytes.iter().position(|&l| l > 9) {
                return Err(Error::bad_data(
                    &self.name,
                    format!("label {i} is {}, but labels must be 0-9", bytes[i]),
                ));
            }
        }
        Ok(bytes)
    }
}

/// Reads an IDX image file, raw or gzip'd, keeping at most `limit` images (all if None).
pub fn read_images(path: &Path, limit: Option<usize>) -> Result<IdxImages> {
    let f = IdxFile::images(path)?;
    images_of(f, limit)
}

/// Reads an IDX label file, raw or gzip'd, keeping at most `limit` labels.
pub fn read_labels(path: &Path, limit: Option<usize>) -> Result<Vec<u8>> {
    let f = IdxFile::labels(path)?;
    let keep = limit.map_or(f.count, |l| l as u64);
    f.read(keep, "")
}

fn images_of(f: IdxFile<'_>, limit: Option<usize>) -> Result<IdxImages> {
    let keep = limit.map_or(f.count, |l| (l as u64).min(f.count));
    let (rows, cols) = (f.rows, f.cols);
    let pixels = f.read(keep, "")?;
    Ok(IdxImages {
        count: keep as usize,
        rows,
        cols,
        pixels,
    })
}

/// Parses an IDX image file already in memory (decompressed).
pub fn parse_images(bytes: &[u8], name: &str) -> Result<IdxImages> {
    let stored = Stored::Raw(bytes.len() as u64);
    images_of(
        IdxFile::images_from(Box::new(bytes), stored, name.into())?,
        None,
    )
}

/// Parses an IDX label file already in memory (decompressed); every label must be 0-9.
pub fn parse_labels(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    let stored = Stored::Raw(bytes.len() as u64);
    let f = IdxFile::labels_from(Box::new(bytes), stored, name.into())?;
    let all = f.count;
    f.read(all, "")
}

/// Writes an IDX image file (used by tests and to cut subsets).
pub fn encode_images(count: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Writes an IDX label file.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}
