//! The IDX format of MNIST (big-endian dims, unsigned-byte data), gzipped or raw.

use std::io::{BufRead, BufReader, Read};
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

/// Reads an IDX file, decompressing it as it goes if it starts with the gzip magic. The
/// header is read first and nothing past the size it declares is inflated, so memory stays
/// bounded by the declared size (at most [`MAX_BYTES`]) whatever the file holds.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    if path.is_dir() {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            message: "is a directory, expected an IDX data file".into(),
        });
    }
    let file =
        std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open data file", e))?;
    let mut reader = BufReader::new(file);
    let magic = reader
        .fill_buf()
        .map_err(|e| Error::io(path, "cannot read data file", e))?;
    let gzip = magic.starts_with(&[0x1f, 0x8b]);
    let source: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    parse_idx(source, gzip).map_err(|(offset, message)| Error::Data {
        path: path.to_path_buf(),
        offset,
        message,
    })
}

/// Reads up to `buf.len()` bytes; returns how many there were (fewer only at the end).
fn read_full(r: &mut dyn Read, buf: &mut [u8], gzip: bool) -> std::result::Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if gzip => return Err(format!("corrupt gzip stream: {e}")),
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    Ok(n)
}

/// What is wrong and at which byte of the (decompressed) file.
type Fault<T> = std::result::Result<T, (u64, String)>;

/// Parses (decompressed) IDX bytes from `r`; errors carry the byte offset at fault.
fn parse_idx(mut r: impl Read, gzip: bool) -> Fault<IdxArray> {
    let r: &mut dyn Read = &mut r;
    let dims = read_dims(r, gzip)?;
    let header = 4 + 4 * dims.len();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n as u64 <= MAX_BYTES)
        .ok_or((
            4,
            format!("dimensions {dims:?} are too large (more than {MAX_BYTES} bytes)"),
        ))?;
    // Grows with what actually arrives, so a header that lies costs no memory.
    let mut data = Vec::new();
    r.take(expected as u64)
        .read_to_end(&mut data)
        .map_err(|e| {
            let m = if gzip {
                format!("corrupt gzip stream: {e}")
            } else {
                format!("cannot read: {e}")
            };
            (header as u64, m)
        })?;
    if data.len() < expected {
        return Err((
            (header + data.len()) as u64,
            format!(
                "truncated: dimensions {dims:?} need {expected} data bytes, found {}",
                data.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if read_full(r, &mut extra, gzip).map_err(|m| ((header + expected) as u64, m))? > 0 {
        return Err((
            (header + expected) as u64,
            format!("trailing bytes: dimensions {dims:?} need {expected} data bytes, found more"),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// The header: magic `00 00`, the unsigned-byte type, then the big-endian dimensions.
fn read_dims(r: &mut dyn Read, gzip: bool) -> Fault<Vec<usize>> {
    let mut head = [0u8; 4];
    let got = read_full(r, &mut head, gzip).map_err(|m| (0, m))?;
    if got < 4 {
        return Err((
            got as u64,
            format!("file ends after {got} bytes, expected a 4-byte IDX header"),
        ));
    }
    if head[0] != 0 || head[1] != 0 {
        let m = format!(
            "bad magic {:02x} {:02x}, expected 00 00 (not an IDX file)",
            head[0], head[1]
        );
        return Err((0, m));
    }
    if head[2] != IDX_U8 {
        let m = format!("data type 0x{:02x}, expected 0x08 (unsigned byte)", head[2]);
        return Err((2, m));
    }
    let ndims = head[3] as usize;
    if ndims == 0 {
        return Err((3, "0 dimensions, expected at least 1".into()));
    }
    let mut dim_bytes = vec![0u8; 4 * ndims];
    let got = read_full(r, &mut dim_bytes, gzip).map_err(|m| (4, m))?;
    if got < dim_bytes.len() {
        return Err((
            (4 + got) as u64,
            format!(
                "file ends inside the header, expected {} header bytes",
                4 + 4 * ndims
            ),
        ));
    }
    Ok(dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect())
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
        let a = parse_idx(&idx(&[2, 1, 3], &[1, 2, 3, 4, 5, 6])[..], false).unwrap();
        assert_eq!(a.dims, vec![2, 1, 3]);
        assert_eq!(a.count(), 2);
        assert_eq!(a.item_len(), 3);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn errors_name_the_offset() {
        let mut bad_magic = idx(&[1], &[7]);
        bad_magic[0] = 9;
        assert_eq!(parse_idx(&bad_magic[..], false).unwrap_err().0, 0);
        let mut bad_type = idx(&[1], &[7]);
        bad_type[2] = 0x0d;
        assert_eq!(parse_idx(&bad_type[..], false).unwrap_err().0, 2);
        let truncated = idx(&[4, 2], &[1, 2, 3]);
        let (off, msg) = parse_idx(&truncated[..], false).unwrap_err();
        assert_eq!(off, 12 + 3); // 12 header bytes for two dims, then the 3 data bytes there are
        assert!(msg.contains("truncated"), "{msg}");
        assert!(parse_idx(&[0u8, 0][..], false).is_err());
        let huge = idx(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(parse_idx(&huge[..], false)
            .unwrap_err()
            .1
            .contains("too large"));
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
        // Two members one after the other (pigz, `cat a.gz b.gz`) are one stream.
        let mut two = Vec::new();
        for part in [&bytes[..5], &bytes[5..]] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(part).unwrap();
            two.extend(gz.finish().unwrap());
        }
        std::fs::write(dir.path().join("two"), &two).unwrap();
        assert_eq!(read_idx(&dir.path().join("two")).unwrap(), a);
        // Garbage after the member is no second member: refused.
        two.extend_from_slice(b"garbage!");
        std::fs::write(dir.path().join("junk"), &two).unwrap();
        assert!(read_idx(&dir.path().join("junk")).is_err());
    }

    #[test]
    fn gzip_is_inflated_no_further_than_the_header_declares() {
        use std::io::Write;
        // 3 declared labels followed by 64 MiB of zeros: refused as trailing bytes after
        // inflating a few kilobytes, not the whole stream.
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx(&[3], &[1, 2, 3])).unwrap();
        gz.write_all(&vec![0u8; 64 << 20]).unwrap();
        let p = dir.path().join("bomb.gz");
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let e = read_idx(&p).unwrap_err().to_string();
        assert!(e.contains("byte 11") && e.contains("trailing bytes"), "{e}");
        // A header that declares far more than the stream holds allocates only what arrives.
        let lying = idx(&[u32::MAX], &[5; 10]);
        let (off, msg) = parse_idx(&lying[..], false).unwrap_err();
        assert_eq!(off, 8 + 10);
        assert!(msg.contains("truncated"), "{msg}");
    }
}
