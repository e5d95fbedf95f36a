//! Single images as 8-bit grey pixels: PGM (P2, P5) and PNG (any colour type, converted
//! with BT.601 luma). Sizes are checked against [`MAX_PIXELS`] before anything is
//! allocated, so a tiny file declaring a huge image costs nothing.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The largest image accepted, in pixels (16 megapixels; MNIST's are 784).
pub const MAX_PIXELS: usize = 1 << 24;

/// A grey image, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// `width * height`, or an error if it overflows or exceeds `max_pixels`.
fn pixel_count(
    path: &Path,
    offset: u64,
    width: usize,
    height: usize,
    max_pixels: usize,
) -> Result<usize> {
    width
        .checked_mul(height)
        .filter(|&n| n <= max_pixels)
        .ok_or_else(|| Error::Data {
            path: path.to_path_buf(),
            offset,
            message: format!(
                "image of {width} x {height} pixels, expected at most {max_pixels} pixels"
            ),
        })
}

/// Reads a PNG or PGM file, chosen by its first bytes, of at most `max_pixels` pixels
/// (capped at [`MAX_PIXELS`]; a caller that knows the size it needs, such as a model's
/// input width, passes that, so memory stays bounded by it).
pub fn read_image(path: &Path, max_pixels: usize) -> Result<GreyImage> {
    let max_pixels = max_pixels.min(MAX_PIXELS);
    let mut head = [0u8; 2];
    let n = std::fs::File::open(path)
        .and_then(|f| f.take(2).read(&mut head))
        .map_err(|e| Error::io(path, "cannot read image", e))?;
    match &head[..n] {
        [0x89, b'P'] => read_png(path, max_pixels),
        [b'P', b'2'] | [b'P', b'5'] => read_pgm(path, max_pixels),
        _ => Err(Error::Data {
            path: path.to_path_buf(),
            offset: 0,
            message: "not a PNG or a P2/P5 PGM image".into(),
        }),
    }
}

/// [`read_image`] with `channels` bytes per pixel: 1 (grey) or 3 (RGB; a grey image's
/// value is replicated).
pub fn read_image_as(path: &Path, max_pixels: usize, channels: usize) -> Result<GreyImage> {
    let is_png = std::fs::File::open(path)
        .and_then(|f| {
            let mut head = [0u8; 2];
            let n = f.take(2).read(&mut head)?;
            Ok(head[..n] == [0x89, b'P'])
        })
        .map_err(|e| Error::io(path, "cannot read image", e))?;
    if is_png {
        return read_png_as(path, max_pixels.min(MAX_PIXELS), channels);
    }
    let mut img = read_image(path, max_pixels)?;
    if channels == 3 {
        img.pixels = img.pixels.iter().flat_map(|&g| [g; 3]).collect();
    }
    Ok(img)
}

/// Reads a PNG of at most `max_pixels` pixels as 8-bit grey.
pub fn read_png(path: &Path, max_pixels: usize) -> Result<GreyImage> {
    read_png_as(path, max_pixels, 1)
}

/// Reads a PNG as 8-bit grey (`channels` 1) or RGB (`channels` 3: grey replicated, alpha
/// dropped); `pixels` then holds `channels` bytes per pixel.
fn read_png_as(path: &Path, max_pixels: usize, channels: usize) -> Result<GreyImage> {
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open image", e))?;
    // The signature, then IHDR (always the first chunk): its size is known from 24 bytes.
    let mut head = Vec::with_capacity(24);
    (&mut file)
        .take(24)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, "cannot read image", e))?;
    if head.len() == 24 && &head[12..16] == b"IHDR" {
        let be = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        pixel_count(path, 16, be(16) as usize, be(20) as usize, max_pixels)?;
    }
    let file = std::io::Read::chain(std::io::Cursor::new(head), file);
    let bad = |e: png::DecodingError| Error::Data {
        path: path.to_path_buf(),
        offset: 0,
        message: png_message(&e),
    };
    let mut decoder = png::Decoder::new_with_limits(
        std::io::BufReader::new(file),
        png::Limits {
            bytes: 8 * max_pixels.max(1024),
        },
    );
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(bad)?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    pixel_count(path, 16, w, h, max_pixels)?;
    if reader.info().bit_depth == png::BitDepth::Sixteen {
        // Cut to their high bytes, values of 0-255 would read as black: refused, as a
        // 16-bit PGM is.
        return Err(Error::Data {
            path: path.to_path_buf(),
            offset: 24,
            message: "16-bit samples, expected 8-bit ones (convert the image to 8 bits)".into(),
        });
    }
    let size = reader.output_buffer_size();
    let mut buf = Vec::new();
    buf.try_reserve_exact(size).map_err(|_| Error::Data {
        path: path.to_path_buf(),
        offset: 16,
        message: format!("cannot allocate {size} bytes to decode the image"),
    })?;
    buf.resize(size, 0);
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    let data = buf.get(..info.buffer_size()).unwrap_or(&buf);
    let samples = info.color_type.samples().max(1);
    // Grey + alpha or RGBA (a tRNS chunk expands to alpha): a transparent pixel has no
    // one value (a digit drawn in alpha over black reads as black), so it is refused.
    if matches!(samples, 2 | 4) {
        if let Some(i) = data
            .chunks_exact(samples)
            .position(|px| px[samples - 1] != 255)
        {
            return Err(Error::Data {
                path: path.to_path_buf(),
                offset: 0,
                message: format!(
                    "pixel {i} (row {}, column {}) is transparent (alpha {}), expected an opaque image (flatten it onto its background first)",
                    i / w.max(1),
                    i % w.max(1),
                    data[i * samples + samples - 1]
                ),
            });
        }
    }
    let pixels = if channels == 3 {
        data.chunks_exact(samples)
            .flat_map(|px| match px {
                [g] | [g, _] => [*g; 3],
                [r, g, b, ..] => [*r, *g, *b],
                [] => [0; 3],
            })
            .collect()
    } else {
        data.chunks_exact(samples)
            .map(|px| match px {
                [g] | [g, _] => *g,
                // ITU-R BT.601 luma.
                [r, g, b, ..] => {
                    (0.299 * *r as f32 + 0.587 * *g as f32 + 0.114 * *b as f32).round() as u8
                }
                [] => 0,
            })
            .collect()
    };
    Ok(GreyImage {
        width: w,
        height: h,
        pixels,
    })
}

/// The png crate's message in one line without its debug-printed structs.
fn png_message(e: &png::DecodingError) -> String {
    let text = e.to_string();
    if text.contains("CRC error") {
        return "corrupt PNG: a chunk's CRC checksum does not match (the file is damaged)".into();
    }
    match e {
        png::DecodingError::LimitsExceeded => {
            format!("corrupt PNG or image larger than {MAX_PIXELS} pixels")
        }
        _ => format!(
            "corrupt PNG: {}",
            text.split(['{', '\n']).next().unwrap_or("").trim()
        ),
    }
}

/// Reads a binary (P5) or text (P2) PGM of at most `max_pixels` pixels with maxval up to
/// 255, scaled to 0..=255.
pub fn read_pgm(path: &Path, max_pixels: usize) -> Result<GreyImage> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open image", e))?;
    let max_pixels = max_pixels.min(MAX_PIXELS);
    // A P2 file spends at most 4 bytes ("255 ") per pixel, plus a header.
    let limit = 4 * max_pixels as u64 + 4096;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, "cannot read image", e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Data {
            path: path.to_path_buf(),
            offset: limit,
            message: format!("file larger than {limit} bytes, too large for {max_pixels} pixels"),
        });
    }
    parse_pgm(&bytes, max_pixels).map_err(|(offset, message)| Error::Data {
        path: path.to_path_buf(),
        offset,
        message,
    })
}

/// What is wrong and at which byte.
type Fault<T> = std::result::Result<T, (u64, String)>;

/// A header field or pixel: its offset and its bytes.
type Field<'a> = (usize, &'a [u8]);

/// A whole number at `offset`, `what` naming it in the error.
fn pgm_number((offset, text): Field, what: &str) -> Fault<usize> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .ok_or((
            offset as u64,
            format!(
                "{what} `{}` is not a whole number",
                String::from_utf8_lossy(&text[..text.len().min(20)])
            ),
        ))
}

/// The four header fields (magic, width, height, maxval) with their offsets, separated by
/// whitespace, `#` starting a comment; and the offset after the last one.
fn pgm_header(bytes: &[u8]) -> Fault<([Field<'_>; 4], usize)> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 && pos < bytes.len() {
        if bytes[pos] == b'#' {
            while pos < bytes.len() && bytes[pos] != b'\n' {
                pos += 1;
            }
        } else if bytes[pos].is_ascii_whitespace() {
            pos += 1;
        } else {
            let start = pos;
            while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            fields.push((start, &bytes[start..pos]));
        }
    }
    match fields[..] {
        [a, b, c, d] => Ok(([a, b, c, d], pos)),
        _ => Err((
            pos as u64,
            "file ends inside the header, expected P2 or P5, width, height, maxval".into(),
        )),
    }
}

/// Parses PGM bytes of an image of at most `max_pixels` pixels; errors carry the byte
/// offset at fault.
pub fn parse_pgm(bytes: &[u8], max_pixels: usize) -> Fault<GreyImage> {
    let (fields, pos) = pgm_header(bytes)?;
    let (w, h) = (
        pgm_number(fields[1], "width")?,
        pgm_number(fields[2], "height")?,
    );
    let max = pgm_number(fields[3], "maxval")?;
    if !(1..=255).contains(&max) {
        return Err((
            fields[3].0 as u64,
            format!("maxval {max}, expected 1..=255"),
        ));
    }
    let n = w
        .checked_mul(h)
        .filter(|&n| n > 0 && n <= max_pixels)
        .ok_or((
            fields[1].0 as u64,
            format!("image of {w} x {h} pixels, expected 1 to {max_pixels} pixels"),
        ))?;
    let scale = |(at, v): (usize, usize)| {
        if v > max {
            return Err((
                at as u64,
                format!("pixel value {v} above the header's maxval {max}"),
            ));
        }
        Ok(((v * 255) / max) as u8)
    };
    let pixels = match fields[0].1 {
        // Exactly one whitespace byte separates the header from P5 data. After "\r\n" the
        // data may start past both (a Windows writer) or at the "\n": where only one
        // reading fits the file's length (trailing whitespace allowed), that one; where
        // both fit, the image is ambiguous (one reading shifts every pixel): refused.
        b"P5" if bytes.get(pos..pos + 2) == Some(b"\r\n") => {
            let fits = |start: usize| {
                bytes.len() >= start + n && bytes[start + n..].iter().all(u8::is_ascii_whitespace)
            };
            match (fits(pos + 1), fits(pos + 2)) {
                (true, true) => {
                    return Err((
                        pos as u64,
                        "the header ends in \\r\\n and the pixels fit after either byte, so where they start is ambiguous (P5 takes one whitespace byte after maxval); save it again with a single newline".into(),
                    ))
                }
                (false, true) => pgm_binary(bytes, pos + 2, n, scale)?,
                _ => pgm_binary(bytes, pos + 1, n, scale)?,
            }
        }
        b"P5" => pgm_binary(bytes, pos + 1, n, scale)?,
        b"P2" => pgm_text(bytes, pos, n, scale)?,
        other => {
            return Err((
                0,
                format!(
                    "magic `{}`, expected P2 or P5",
                    String::from_utf8_lossy(&other[..other.len().min(8)])
                ),
            ))
        }
    };
    Ok(GreyImage {
        width: w,
        height: h,
        pixels,
    })
}

/// Bytes after an image's last pixel: anything but whitespace means the header's size is
/// not the data's (or a second image follows), which would be read with the wrong stride.
fn check_end(bytes: &[u8], end: usize, n: usize) -> Fault<()> {
    match bytes.get(end..).unwrap_or(&[]).iter().position(|b| !b.is_ascii_whitespace()) {
        None => Ok(()),
        Some(i) => Err((
            (end + i) as u64,
            format!(
                "{} more bytes after the header's {n} pixels, expected the file to end (the header's width x height is not the data's, or a second image follows)",
                bytes.len() - end
            ),
        )),
    }
}

/// `n` raw pixel bytes from `start` (P5), scaled to 0..=255.
fn pgm_binary(
    bytes: &[u8],
    start: usize,
    n: usize,
    scale: impl Fn((usize, usize)) -> Fault<u8>,
) -> Fault<Vec<u8>> {
    let data = bytes.get(start..).unwrap_or(&[]);
    if data.len() < n {
        return Err((
            (start + data.len()) as u64,
            format!("file ends after {} of {n} pixels", data.len()),
        ));
    }
    check_end(bytes, start + n, n)?;
    data[..n]
        .iter()
        .enumerate()
        .map(|(i, &v)| scale((start + i, v as usize)))
        .collect()
}

/// `n` whitespace-separated decimal pixels from `start` (P2), scaled to 0..=255.
fn pgm_text(
    bytes: &[u8],
    start: usize,
    n: usize,
    scale: impl Fn((usize, usize)) -> Fault<u8>,
) -> Fault<Vec<u8>> {
    let mut pixels = Vec::with_capacity(n);
    let mut at = start;
    for token in bytes[start..].split(u8::is_ascii_whitespace) {
        if pixels.len() == n {
            break;
        }
        if !token.is_empty() {
            pixels.push(scale((at, pgm_number((at, token), "pixel")?))?);
        }
        at += token.len() + 1;
    }
    if pixels.len() < n {
        return Err((
            bytes.len() as u64,
            format!("file ends after {} of {n} pixels", pixels.len()),
        ));
    }
    check_end(bytes, at.min(bytes.len()), n)?;
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_p5_and_p2_alike_with_scaling() {
        let p5 = parse_pgm(b"P5 3 1 # c\n15\n\x00\x0f\x05", MAX_PIXELS).unwrap();
        let p2 = parse_pgm(b"P2\n3 1\n15\n0 15\n5\n", MAX_PIXELS).unwrap();
        assert_eq!(p5, p2);
        assert_eq!(p5.pixels, vec![0, 255, 85]);
        assert_eq!((p5.width, p5.height), (3, 1));
    }

    #[test]
    fn hostile_sizes_are_refused_before_allocation() {
        // 2^32 + 784 wraps to 784 in 32-bit arithmetic; here it overflows nothing and is
        // simply too large.
        let wraps = format!("P5 4294967297 784 255\n{}", "x".repeat(784));
        let (_, m) = parse_pgm(wraps.as_bytes(), MAX_PIXELS).unwrap_err();
        assert!(m.contains("expected 1 to"), "{m}");
        let overflow = b"P5 18446744073709551615 18446744073709551615 255\n";
        assert!(parse_pgm(overflow, MAX_PIXELS)
            .unwrap_err()
            .1
            .contains("pixels"));
        let (off, m) = parse_pgm(b"P5 2 2 255\n\x01", MAX_PIXELS).unwrap_err();
        assert_eq!(off, 12);
        assert!(m.contains("1 of 4"), "{m}");
        assert!(parse_pgm(b"P2 1 1 0\n0", MAX_PIXELS)
            .unwrap_err()
            .1
            .contains("maxval"));
        assert!(parse_pgm(b"P2 1 1 255\nx", MAX_PIXELS)
            .unwrap_err()
            .1
            .contains("pixel"));
    }

    #[test]
    fn a_tiny_png_declaring_a_huge_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.png");
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, 100_000, 100_000);
            enc.set_color(png::ColorType::Rgba);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap();
        }
        std::fs::write(&p, &bytes).unwrap();
        let e = read_image(&p, MAX_PIXELS).unwrap_err().to_string();
        assert!(e.contains("huge.png") && e.contains("pixels"), "{e}");
        // A flipped bit in a chunk: one line, no debug struct.
        let mut good = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut good, 2, 2);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header()
                .unwrap()
                .write_image_data(&[1, 2, 3, 4])
                .unwrap();
        }
        std::fs::write(&p, &good).unwrap();
        assert_eq!(read_image(&p, MAX_PIXELS).unwrap().pixels, vec![1, 2, 3, 4]);
        let at = good.len() - 20;
        good[at] ^= 0x40;
        std::fs::write(&p, &good).unwrap();
        let e = read_image(&p, MAX_PIXELS).unwrap_err().to_string();
        assert!(!e.contains('{') && !e.contains('\n'), "{e}");
    }
    #[test]
    fn pgm_data_that_disagrees_with_its_header_is_refused() {
        // A 2 x 2 header over 3 x 3 data would be read with the wrong stride.
        let (off, m) = parse_pgm(
            b"P5 2 2 255\n\x01\x02\x03\x04\x05\x06\x07\x08\x09",
            MAX_PIXELS,
        )
        .unwrap_err();
        assert_eq!(off, 15);
        assert!(
            m.contains("5 more bytes") && m.contains("expected the file to end"),
            "{m}"
        );
        let (_, m) = parse_pgm(b"P2 2 1 255\n1 2 3\n", MAX_PIXELS).unwrap_err();
        assert!(m.contains("more bytes"), "{m}");
        // "\r\n" after maxval where the pixels fit after either byte: ambiguous, refused
        // (read from the "\n", this 2 x 1 image would be [10, 5] with its 10 dropped).
        for file in [&b"P5 2 1 255\r\n\x05\x0a"[..], b"P5 2 1 255\r\n\x05\x0a\n"] {
            let (off, m) = parse_pgm(file, MAX_PIXELS).unwrap_err();
            assert_eq!(off, 10);
            assert!(m.contains("ambiguous"), "{m}");
        }
        // Where only the "\r\n" reading fits, it is taken.
        assert_eq!(
            parse_pgm(b"P5 2 1 255\r\n\x05\x07", MAX_PIXELS)
                .unwrap()
                .pixels,
            [5, 7]
        );
        // A first pixel of 10 after a single separator is read as it is.
        assert_eq!(
            parse_pgm(b"P5 2 1 255\n\x0a\x05", MAX_PIXELS)
                .unwrap()
                .pixels,
            [10, 5]
        );
        // Trailing whitespace is no data.
        assert_eq!(
            parse_pgm(b"P5 1 1 255\n\x07\n", MAX_PIXELS).unwrap().pixels,
            [7]
        );
        assert_eq!(
            parse_pgm(b"P2 1 1 255\n7 \n\n", MAX_PIXELS).unwrap().pixels,
            [7]
        );
        // A value above maxval is not clamped into range.
        let (off, m) = parse_pgm(b"P2 2 1 15\n3 200\n", MAX_PIXELS).unwrap_err();
        assert_eq!(off, 12);
        assert!(m.contains("200 above the header's maxval 15"), "{m}");
        let (off, m) = parse_pgm(b"P5 2 1 15\n\x03\x10", MAX_PIXELS).unwrap_err();
        assert_eq!((off, m.contains("16 above")), (11, true), "{m}");
    }

    fn png_of(color: png::ColorType, depth: png::BitDepth, w: u32, data: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, w, 1);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.write_header().unwrap().write_image_data(data).unwrap();
        bytes
    }

    #[test]
    fn sixteen_bit_and_transparent_pngs_are_refused_opaque_ones_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.png");
        let read = |bytes: Vec<u8>| {
            std::fs::write(&p, bytes).unwrap();
            read_image(&p, MAX_PIXELS)
                .map(|i| i.pixels)
                .map_err(|e| e.to_string())
        };
        use png::{BitDepth::*, ColorType::*};
        // 16-bit grey holding 0-255: cut to high bytes it would be black.
        let e = read(png_of(Grayscale, Sixteen, 2, &[0, 200, 0, 100])).unwrap_err();
        assert!(e.contains("i.png") && e.contains("16-bit"), "{e}");
        // A digit drawn in alpha over black RGB.
        let e = read(png_of(Rgba, Eight, 2, &[0, 0, 0, 255, 0, 0, 0, 9])).unwrap_err();
        assert!(
            e.contains("pixel 1 (row 0, column 1) is transparent (alpha 9)"),
            "{e}"
        );
        let e = read(png_of(GrayscaleAlpha, Eight, 2, &[5, 0, 6, 255])).unwrap_err();
        assert!(e.contains("pixel 0") && e.contains("alpha 0"), "{e}");
        // Opaque alpha is no loss: the colour is read.
        assert_eq!(
            read(png_of(GrayscaleAlpha, Eight, 2, &[5, 255, 6, 255])).unwrap(),
            [5, 6]
        );
        assert_eq!(
            read(png_of(Rgba, Eight, 1, &[10, 10, 10, 255])).unwrap(),
            [10]
        );
    }
}
