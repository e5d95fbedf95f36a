//! The IDX format of MNIST (big-endian dims, unsigned-byte data), gzipped or raw.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The IDX data-type byte for unsigned bytes, the only type this reader accepts.
const IDX_U8: u8 = 0x08;
/// Files larger than this (decompressed) are refused rather than read into memory.
const MAX_BYTES: u64 = 1 << 32;

/// An n-dimensional array of bytes read from an IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// The dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Items along the first dimension.
    pub fn count(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }
    /// Bytes per item (the product of the other dimensions).
    pub fn item_len(&self) -> usize {
        self.dims.iter().skip(1).product()
    }
}

/// Reads an IDX file, decompressing it first if it starts with the gzip magic.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open data file", e))?;
    let mut raw = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| Error::io(path, "cannot read data file", e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::Data {
                path: path.to_path_buf(),
                offset: out.len() as u64,
                message: format!("corrupt gzip stream: {e}"),
            })?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|(offset, message)| Error::Data {
        path: path.to_path_buf(),
        offset,
        message,
    })
}

/// Parses decompressed IDX bytes; errors carry the byte offset at fault.
fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, (u64, String)> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err((MAX_BYTES, format!("file larger than {MAX_BYTES} bytes")));
    }
    if bytes.len() < 4 {
        return Err((
            bytes.len() as u64,
            format!(
                "file ends after {} bytes, expected a 4-byte IDX header",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err((
            0,
            format!(
                "bad magic {:02x} {:02x}, expected 00 00 (not an IDX file)",
                bytes[0], bytes[1]
            ),
        ));
    }
    if bytes[2] != IDX_U8 {
        return Err((
            2,
            format!(
                "data type 0x{:02x}, expected 0x08 (unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err((3, "0 dimensions, expected at least 1".into()));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err((
            bytes.len() as u64,
            format!("file ends inside the header, expected {header} header bytes"),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n as u64 <= MAX_BYTES)
        .ok_or((4, format!("dimensions {dims:?} are too large")))?;
    let have = bytes.len() - header;
    if have != expected {
        let what = if have < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err((
            (header + have.min(expected)) as u64,
            format!("{what}: dimensions {dims:?} need {expected} data bytes, found {have}"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, IDX_U8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_a_hand_made_file() {
        let a = parse_idx(&idx(&[2, 1, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(a.dims, vec![2, 1, 3]);
        assert_eq!(a.count(), 2);
        assert_eq!(a.item_len(), 3);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn errors_name_the_offset() {
        let mut bad_magic = idx(&[1], &[7]);
        bad_magic[0] = 9;
        assert_eq!(parse_idx(&bad_magic).unwrap_err().0, 0);
        let mut bad_type = idx(&[1], &[7]);
        bad_type[2] = 0x0d;
        assert_eq!(parse_idx(&bad_type).unwrap_err().0, 2);
        let truncated = idx(&[4, 2], &[1, 2, 3]);
        let (off, msg) = parse_idx(&truncated).unwrap_err();
        assert_eq!(off, 12 + 3); // 12 header bytes for two dims, then the 3 data bytes there are
        assert!(msg.contains("truncated"), "{msg}");
        assert!(parse_idx(&[0, 0]).is_err());
        let huge = idx(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(parse_idx(&huge).unwrap_err().1.contains("too large"));
    }

    #[test]
    fn reads_gzip_and_raw_files_alike() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx(&[3], &[9, 8, 7]);
        std::fs::write(dir.path().join("raw"), &bytes).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        std::fs::write(dir.path().join("gz"), gz.finish().unwrap()).unwrap();
        let a = read_idx(&dir.path().join("raw")).unwrap();
        let b = read_idx(&dir.path().join("gz")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.data, vec![9, 8, 7]);
    }
}
