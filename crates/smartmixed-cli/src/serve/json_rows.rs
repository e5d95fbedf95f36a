//! `{"inputs": [[...], ...]}` read straight into one flat buffer of f32, each number from
//! its own text (`str::parse::<f32>`, the nearest f32, as `predict` reads a CSV's text).
//!
//! Why not `Vec<Vec<f64>>` through serde: a decimal rounded to f64 and then to f32 can
//! land on the other f32 of a pair (rounded twice); and a `Vec` per row cost 24 bytes
//! before any value, so a body of empty rows (`[],[],...`) took 9 times its size. Here a
//! row is checked as it is read (its width, each value finite), the first bad one ends
//! the parse, and the buffer holds 4 bytes a value, less than the value's text.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// What the parse collected, and the first row it refused (as the one-line reason).
struct Parsed {
    width: usize,
    values: Vec<f32>,
    rows: usize,
    refused: Option<String>,
}

impl Parsed {
    /// Records why the body is refused and stops the parse.
    fn refuse<E: de::Error>(&mut self, reason: String) -> E {
        self.refused = Some(reason);
        E::custom("refused")
    }
}

/// The rows of a JSON body of `width`-value rows, row-major, or a one-line reason.
pub fn parse(body: &[u8], width: usize) -> Result<Vec<f32>, String> {
    let mut parsed = Parsed {
        width,
        values: Vec::new(),
        rows: 0,
        refused: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = Top(&mut parsed)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(reason) = parsed.refused {
        return Err(reason);
    }
    result.map_err(|e| format!("body: {e}; expected {{\"inputs\": [[{width} numbers], ...]}}"))?;
    if parsed.rows == 0 {
        return Err("inputs: empty, expected at least one row".into());
    }
    Ok(parsed.values)
}

/// The object: `inputs` and nothing else.
struct Top<'a>(&'a mut Parsed);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object {\"inputs\": [rows]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "inputs" {
                return Err(de::Error::unknown_field(&key, &["inputs"]));
            }
            if seen {
                return Err(de::Error::duplicate_field("inputs"));
            }
            seen = true;
            map.next_value_seed(Rows(&mut *self.0))?;
        }
        if !seen {
            return Err(de::Error::missing_field("inputs"));
        }
        Ok(())
    }
}

/// `inputs`: an array of rows.
struct Rows<'a>(&'a mut Parsed);

impl<'de> DeserializeSeed<'de> for Rows<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Row(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One row: `width` finite numbers.
struct Row<'a>(&'a mut Parsed);

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row: an array of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let p = self.0;
        let (i, width) = (p.rows, p.width);
        let mut count = 0usize;
        while let Some(raw) = seq.next_element::<&RawValue>()? {
            let text = raw.get();
            let j = count;
            count += 1;
            if count > width {
                continue; // counted for the message, not kept
            }
            // JSON text that starts as a number is one (serde_json checked its grammar),
            // and every JSON number is a float literal `parse` reads, to the nearest f32.
            let number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
            let value = match text.parse::<f32>() {
                Ok(v) if number => v,
                _ => {
                    let shown: String = text.chars().take(40).collect();
                    return Err(p.refuse(format!(
                        "inputs[{i}][{j}]: {}, expected a number",
                        crate::shown(&shown)
                    )));
                }
            };
            if !value.is_finite() {
                return Err(p.refuse(format!(
                    "inputs[{i}][{j}]: {text}, expected a finite number within f32's range"
                )));
            }
            p.values.push(value);
        }
        if count != width {
            return Err(p.refuse(format!(
                "inputs[{i}]: {count} values, the model takes {width}"
            )));
        }
        p.rows += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// Each number is read to the nearest f32 of its text, as `str::parse::<f32>` (the
    /// CSV reader's) does; through f64 first, a decimal just past the midpoint of two f32s
    /// rounded to the midpoint and then to even, the lower one.
    #[test]
    fn numbers_are_rounded_once_to_the_nearest_f32() {
        let text = "14.230001926422119140625000000001";
        let nearest: f32 = text.parse().unwrap();
        let twice = text.parse::<f64>().unwrap() as f32;
        assert_ne!(nearest, twice, "the oracle no longer tells the two apart");
        let body = format!("{{\"inputs\": [[{text}, -0, 1e-50, 3.4028235e38]]}}");
        let got = parse(body.as_bytes(), 4).unwrap();
        assert_eq!(got[0].to_bits(), nearest.to_bits());
        assert_eq!(got[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(got[2], 0.0);
        assert_eq!(got[3], f32::MAX);
    }

    #[test]
    fn a_bad_row_is_named_by_its_index_and_ends_the_parse() {
        let cases = [
            ("[[1, 2], [3]]", "inputs[1]: 1 values, the model takes 2"),
            (
                "[[1, 2], [3, 4, 5]]",
                "inputs[1]: 3 values, the model takes 2",
            ),
            ("[[1, 2], [], [1, 2]]", "inputs[1]: 0 values"),
            (
                "[[1, 2], [3, 1e39]]",
                "inputs[1][1]: 1e39, expected a finite number",
            ),
            ("[[1, \"2\"]]", "inputs[0][1]: \"2\", expected a number"),
            ("[[1, null]]", "inputs[0][1]: null, expected a number"),
            ("[]", "inputs: empty"),
            ("[1, 2]", "body: invalid type: integer `1`, expected a row"),
        ];
        for (inputs, want) in cases {
            let body = format!("{{\"inputs\": {inputs}}}");
            let error = parse(body.as_bytes(), 2).unwrap_err();
            assert!(error.contains(want), "{inputs}: {error}");
        }
        for (body, want) in [
            ("{\"inputs\": [[1, 2]], \"x\": 1}", "unknown field `x`"),
            (
                "{\"inputs\": [[1, 2]], \"inputs\": [[1, 2]]}",
                "duplicate field",
            ),
            ("{}", "missing field `inputs`"),
            ("{\"inputs\": [[1, 2]]} x", "trailing characters"),
            ("{\"inputs\": [[1, 2]", "EOF"),
        ] {
            let error = parse(body.as_bytes(), 2).unwrap_err();
            assert!(error.contains(want), "{body}: {error}");
        }
        assert_eq!(
            parse(b"{\"inputs\": [[1, 2], [3.5, -4]]}", 2).unwrap(),
            [1.0, 2.0, 3.5, -4.0]
        );
    }
}
