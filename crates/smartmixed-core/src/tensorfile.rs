//! Safetensors files read with memory bounded by what their header declares, and their
//! layout checked with messages a person can act on ("header declares tensor
//! `layers.0.weight` of 100.0 GB, the file holds 2.0 MB of data") instead of the
//! safetensors crate's variant names. Both the runtime and the trainer's checkpoints use it.

use std::io::Read;
use std::path::Path;

/// The largest header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub start: u64,
    pub end: u64,
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Parses a header's JSON into its tensors (sorted by offset), checking every size with
/// checked arithmetic, and that they are packed without gaps or overlaps.
pub fn parse_header(header: &[u8]) -> Result<Vec<TensorEntry>, String> {
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("header is not a JSON object: {e}"))?;
    let mut tensors = Vec::new();
    for (name, v) in &json {
        if name == "__metadata__" {
            let strings = v
                .as_object()
                .is_some_and(|m| m.values().all(|x| x.is_string()));
            if !strings {
                return Err("header `__metadata__` is not a map of strings".into());
            }
            continue;
        }
        tensors.push(
            parse_entry(name, v)
                .map_err(|what| format!("header entry of tensor `{name}`: {what}"))?,
        );
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    let mut at = 0;
    for t in &tensors {
        if t.start != at {
            return Err(format!(
                "tensor `{}` starts at data byte {}, expected {at} (tensors must be packed without gaps or overlaps)",
                t.name, t.start
            ));
        }
        at = t.end;
    }
    Ok(tensors)
}

/// One tensor's header entry: a known dtype, a shape of sizes and data offsets that hold
/// exactly the shape's bytes.
fn parse_entry(name: &str, v: &serde_json::Value) -> Result<TensorEntry, String> {
    let dtype = v.get("dtype").and_then(|d| d.as_str()).ok_or("no dtype")?;
    let size = dtype_size(dtype).ok_or_else(|| format!("unknown dtype {dtype}"))?;
    let shape = v
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or("no shape")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or("shape is not a list of sizes")?;
    let (start, end) = v
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .filter(|o| o.len() == 2)
        .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
        .ok_or("data_offsets is not [start, end]")?;
    let needs = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if end < start || end - start != needs {
        return Err(format!(
            "shape {shape:?} of {dtype} needs {needs} bytes, data_offsets [{start}, {end}] give {}",
            end.saturating_sub(start)
        ));
    }
    Ok(TensorEntry {
        name: name.to_string(),
        dtype: dtype.to_string(),
        shape,
        start,
        end,
    })
}

/// Checks the whole layout of safetensors `bytes`: header length, header, and that the
/// tensors exactly cover the data section.
pub fn check_layout(bytes: &[u8]) -> Result<Vec<TensorEntry>, String> {
    let Some(len) = bytes.get(..8) else {
        return Err(format!(
            "file of {} bytes, expected at least the 8-byte header length",
            bytes.len()
        ));
    };
    let n = u64::from_le_bytes([
        len[0], len[1], len[2], len[3], len[4], len[5], len[6], len[7],
    ]);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes (not a safetensors file?)"
        ));
    }
    let have = bytes.len() as u64 - 8;
    if n > have {
        return Err(format!(
            "header declares {n} header bytes, the file holds {have} after the length"
        ));
    }
    let tensors = parse_header(&bytes[8..8 + n as usize])?;
    let data = have - n;
    let end = tensors.last().map_or(0, |t| t.end);
    if let Some(t) = tensors.iter().find(|t| t.end > data) {
        return Err(format!(
            "header declares tensor `{}` of {} ending at data byte {}, the file holds {} of data",
            t.name,
            human(t.end - t.start),
            t.end,
            human(data)
        ));
    }
    if end != data {
        return Err(format!(
            "{} of data after the last tensor (the file holds {}, the tensors {})",
            human(data - end),
            human(data),
            human(end)
        ));
    }
    Ok(tensors)
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Reads a safetensors file, no further than its header declares: a file that is endless
/// (`/dev/zero`) or lies about its size costs at most the declared size, and only as data
/// arrives. Layout errors are `InvalidData` with [`check_layout`]'s messages.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    if path.is_dir() {
        return Err(invalid(
            "is a directory, expected a safetensors file".into(),
        ));
    }
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut bytes = Vec::new();
    (&mut file).take(8).read_to_end(&mut bytes)?;
    if bytes.len() < 8 {
        return Err(invalid(format!(
            "file of {} bytes, expected at least the 8-byte header length",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]);
    if n > MAX_HEADER_BYTES {
        return Err(invalid(format!(
            "header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes (not a safetensors file?)"
        )));
    }
    (&mut file).take(n).read_to_end(&mut bytes)?;
    if (bytes.len() as u64) < 8 + n {
        return Err(invalid(format!(
            "header declares {n} header bytes, the file holds {} after the length",
            bytes.len() - 8
        )));
    }
    let tensors = parse_header(&bytes[8..]).map_err(invalid)?;
    let data = tensors.last().map_or(0, |t| t.end);
    (&mut file).take(data).read_to_end(&mut bytes)?;
    let mut extra = [0u8; 1];
    if file.read(&mut extra)? > 0 {
        return Err(invalid(format!(
            "bytes after the {} of data the header declares",
            human(data)
        )));
    }
    check_layout(&bytes).map_err(invalid)?;
    Ok(bytes)
}

/// Reads a text file of at most `limit` bytes (configs, manifests, CSV files): larger
/// files, and endless ones like `/dev/zero`, are refused after `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> std::io::Result<String> {
    if path.is_dir() {
        return Err(invalid("is a directory, expected a file".into()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(invalid(format!(
            "larger than the limit of {}",
            human(limit)
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        invalid(format!(
            "not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }

    #[test]
    fn a_good_layout_passes_and_lies_are_named() {
        let good =
            r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"k":"v"}}"#;
        assert_eq!(check_layout(&file(good, 24)).unwrap()[0].shape, vec![2, 3]);
        let e = check_layout(&file(good, 10)).unwrap_err();
        assert!(
            e.contains("tensor `a` of 24 B") && e.contains("10 B of data"),
            "{e}"
        );
        assert!(check_layout(&file(good, 30))
            .unwrap_err()
            .contains("after the last tensor"));
        let huge = r#"{"w":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}}"#;
        let e = check_layout(&file(huge, 2_000_000)).unwrap_err();
        assert!(
            e.contains("`w` of 100.0 GB") && e.contains("2.0 MB of data"),
            "{e}"
        );
        let wrong = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
        assert!(check_layout(&file(wrong, 4))
            .unwrap_err()
            .contains("needs 8 bytes"));
        let overflow =
            r#"{"a":{"dtype":"F64","shape":[18446744073709551615,2],"data_offsets":[0,0]}}"#;
        assert!(check_layout(&file(overflow, 0))
            .unwrap_err()
            .contains("too large"));
        let gap = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
        assert!(check_layout(&file(gap, 2))
            .unwrap_err()
            .contains("starts at data byte 1"));
        assert!(check_layout(&[1, 2]).unwrap_err().contains("8-byte"));
        let mut long = file(good, 24);
        long[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check_layout(&long)
            .unwrap_err()
            .contains("exceeds the limit"));
    }

    #[test]
    fn reading_stops_where_the_header_says() {
        let dir =
            std::env::temp_dir().join(format!("smartmixed-tensorfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        let good = r#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#;
        std::fs::write(&p, file(good, 3)).unwrap();
        assert_eq!(read_file(&p).unwrap().len(), 8 + good.len() + 3);
        std::fs::write(&p, file(good, 4)).unwrap();
        assert!(read_file(&p)
            .unwrap_err()
            .to_string()
            .contains("bytes after"));
        #[cfg(unix)]
        {
            let e = read_file(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(e.contains("header is not a JSON object"), "{e}");
            let e = read_text(Path::new("/dev/zero"), 1000)
                .unwrap_err()
                .to_string();
            assert!(e.contains("limit"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
