//! The IDX file format that MNIST is distributed in, raw or gzip'd.
//!
//! An IDX file is a big-endian header followed by a dense payload of u8:
//! ```text
//! images: magic 0x00000803, count, rows, cols, then count*rows*cols pixels
//! labels: magic 0x00000801, count, then count labels
//! ```
//! The parser trusts nothing: every count comes from the header and is checked against the
//! bytes actually present, and a fault becomes an [`Error::BadData`] naming the file.

use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// gzip streams start with these two bytes (RFC 1952), whatever the file is called.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// No real IDX image file is larger than this; refuse to decompress bombs past it.
const MAX_DECODED_BYTES: u64 = 1 << 31;

/// Images as stored: `count` images of `rows*cols` u8 pixels, row-major, one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads a whole file and, if it is gzip'd (detected by content), decompresses it.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decompress_if_gzip(&raw, &display_name(path))
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
    GzDecoder::new(bytes)
        .take(MAX_DECODED_BYTES)
        .read_to_end(&mut out)
        .map_err(|e| Error::bad_data(name, format!("corrupt or truncated gzip stream: {e}")))?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn check_header(bytes: &[u8], name: &str, magic: u32, header_len: usize, what: &str) -> Result<()> {
    if bytes.len() < header_len {
        return Err(Error::bad_data(
            name,
            format!(
                "file is {} bytes, too short for an IDX {what} header ({header_len} bytes)",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(Error::bad_data(
            name,
            format!("magic number is 0x{found:08x}, expected 0x{magic:08x} for IDX {what}"),
        ));
    }
    Ok(())
}

/// Parses an IDX image file (already decompressed).
pub fn parse_images(bytes: &[u8], name: &str) -> Result<IdxImages> {
    check_header(bytes, name, IMAGES_MAGIC, 16, "images")?;
    let count = be_u32(bytes, 4) as usize;
    let rows = be_u32(bytes, 8) as usize;
    let cols = be_u32(bytes, 12) as usize;
    if rows == 0 || cols == 0 {
        return Err(Error::bad_data(
            name,
            format!("image size is {rows}x{cols}"),
        ));
    }
    // u64 arithmetic: three u32 header fields multiplied can overflow usize on 32-bit hosts.
    let expected = count as u64 * rows as u64 * cols as u64;
    let held = (bytes.len() - 16) as u64;
    if held != expected {
        return Err(Error::bad_data(
            name,
            format!(
                "header says {count} images of {rows}x{cols} ({expected} bytes) but the file holds {held} bytes of pixels"
            ),
        ));
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: bytes[16..].to_vec(),
    })
}

/// Parses an IDX label file (already decompressed); every label must be 0-9.
pub fn parse_labels(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    check_header(bytes, name, LABELS_MAGIC, 8, "labels")?;
    let count = be_u32(bytes, 4) as usize;
    let held = bytes.len() - 8;
    if held != count {
        return Err(Error::bad_data(
            name,
            format!("header says {count} labels but the file holds {held}"),
        ));
    }
    let labels = &bytes[8..];
    if let Some(i) = labels.iter().position(|&l| l > 9) {
        return Err(Error::bad_data(
            name,
            format!("label {i} is {}, but labels must be 0-9", labels[i]),
        ));
    }
    Ok(labels.to_vec())
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
