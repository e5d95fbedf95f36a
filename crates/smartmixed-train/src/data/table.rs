//! CSV tables: a header row, numeric feature columns and one label column (integers or
//! strings). A missing or non-numeric cell is an error naming the row and the column, or
//! drops its row (`data.invalid = "drop"`). Reading stops at a size limit.

use std::io::Read;
use std::path::Path;

use smartmixed_core::InvalidCells;

use crate::{Error, Result};

/// The largest table read (values are held as f32, about the text's size).
pub const MAX_TABLE_BYTES: u64 = 2 << 30;

/// A table as read: feature names, row-major values, each row's label text.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub features: Vec<String>,
    pub values: Vec<f32>,
    pub labels: Vec<String>,
    /// Rows left out for an invalid cell (`InvalidCells::Drop`).
    pub dropped: usize,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}

/// Reads `path` with `label` as the label column; every other column is a feature.
pub fn read_table(path: &Path, label: &str, invalid: InvalidCells) -> Result<Table> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot read table", e))?;
    parse_table(file, label, invalid).map_err(|message| Error::Mismatch {
        path: path.to_path_buf(),
        message,
    })
}

/// A reader that fails, rather than stopping short, once more than `left` bytes arrive:
/// a table over the limit is an error, never silently cut.
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return match self.inner.read(&mut [0u8; 1])? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!(
                    "the file is larger than the limit of {} bytes",
                    self.limit
                ))),
            };
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// A CSV reader over at most `limit` bytes of `reader` (cells trimmed, rows of any length:
/// callers check them) and its header.
fn open<R: Read>(
    reader: R,
    limit: u64,
) -> std::result::Result<(csv::Reader<Limited<R>>, Vec<String>), String> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(Limited {
            inner: reader,
            left: limit,
            limit,
        });
    let header = csv
        .headers()
        .map_err(|e| format!("line 1: {e}"))?
        .iter()
        .map(str::to_string)
        .collect();
    Ok((csv, header))
}

/// [`read_table`] from any reader; the error names the line and the column.
pub fn parse_table(
    reader: impl Read,
    label: &str,
    invalid: InvalidCells,
) -> std::result::Result<Table, String> {
    parse_limited(reader, label, invalid, MAX_TABLE_BYTES)
}

/// [`parse_table`] of at most `limit` bytes.
fn parse_limited(
    reader: impl Read,
    label: &str,
    invalid: InvalidCells,
    limit: u64,
) -> std::result::Result<Table, String> {
    let (mut csv, header) = open(reader, limit)?;
    let label_col = header.iter().position(|h| h == label).ok_or_else(|| {
        format!("line 1: no column `{label}` (the label) in the header {header:?}")
    })?;
    if header.len() < 2 {
        return Err("line 1: expected the label column and at least one feature column".into());
    }
    let features: Vec<String> = header
        .iter()
        .enumerate()
        .filter(|&(c, _)| c != label_col)
        .map(|(_, h)| h.clone())
        .collect();
    let mut table = Table {
        features,
        values: Vec::new(),
        labels: Vec::new(),
        dropped: 0,
    };
    let mut row = Vec::with_capacity(header.len() - 1);
    for record in csv.records() {
        let record = record.map_err(|e| describe(&e))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record.get(0) == Some("") {
            continue; // a blank line
        }
        match parse_row(&record, &header, label_col, &mut row) {
            Ok(()) => {
                table.values.extend_from_slice(&row);
                table.labels.push(record[label_col].to_string());
            }
            Err(e) if invalid == InvalidCells::Drop && !e.starts_with("ragged") => {
                table.dropped += 1
            }
            Err(e) => return Err(format!("line {line}: {}", e.trim_start_matches("ragged "))),
        }
    }
    if table.rows() == 0 {
        return Err("no data rows, expected at least one after the header".into());
    }
    Ok(table)
}

/// One record's features into `row`; the error names the column (a wrong field count
/// starts with "ragged", and is never dropped: the file's shape is wrong, not a cell).
fn parse_row(
    record: &csv::StringRecord,
    header: &[String],
    label_col: usize,
    row: &mut Vec<f32>,
) -> std::result::Result<(), String> {
    if record.len() != header.len() {
        return Err(format!(
            "ragged {} fields, expected {} as in the header",
            record.len(),
            header.len()
        ));
    }
    row.clear();
    for (c, cell) in record.iter().enumerate() {
        if c == label_col {
            if cell.is_empty() {
                return Err(format!("column `{}`: missing label", header[c]));
            }
            continue;
        }
        let v: f32 = cell.parse().map_err(|_| {
            let what = if cell.is_empty() {
                "missing value".to_string()
            } else {
                format!("`{cell}` is not a number")
            };
            format!("column `{}`: {what}", header[c])
        })?;
        if !v.is_finite() {
            return Err(format!(
                "column `{}`: `{cell}` is not a finite number",
                header[c]
            ));
        }
        row.push(v);
    }
    Ok(())
}

/// Rows to classify from a CSV file with a header: the columns named `features`, in that
/// order (other columns, such as a label, are ignored), or every column when `features` is
/// empty, then exactly `width` of them. Errors name the file, line and column.
pub fn read_rows(path: &Path, features: &[String], width: usize) -> Result<Vec<Vec<f32>>> {
    let bad = |message: String| Error::Mismatch {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot read rows", e))?;
    let (mut csv, header) = open(file, MAX_TABLE_BYTES).map_err(bad)?;
    let columns: Vec<usize> = if features.is_empty() {
        (0..header.len()).collect()
    } else {
        features
            .iter()
            .map(|f| {
                header.iter().position(|h| h == f).ok_or_else(|| {
                    bad(format!(
                        "line 1: no column `{f}`, a feature the model was trained on"
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    if columns.len() != width {
        return Err(bad(format!(
            "line 1: {} columns, the model expects {width} features",
            columns.len()
        )));
    }
    let mut rows = Vec::new();
    for record in csv.records() {
        let record = record.map_err(|e| bad(describe(&e)))?;
        let line = record.position().map_or(0, |p| p.line());
        let row = columns
            .iter()
            .map(|&c| {
                let cell = record.get(c).unwrap_or("");
                cell.parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        bad(format!(
                            "line {line}: column `{}`: `{cell}` is not a number",
                            header[c]
                        ))
                    })
            })
            .collect::<Result<Vec<f32>>>()?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(bad("no rows after the header".into()));
    }
    Ok(rows)
}

/// A csv error in one line.
fn describe(e: &csv::Error) -> String {
    let line = e.position().map_or(0, |p| p.line());
    let text = e.to_string().replace('\n', " ");
    format!("line {line}: {text}")
}

/// The distinct labels in class order: numerically when every label is an integer, else
/// as text.
pub fn class_names(labels: &[String]) -> Vec<String> {
    let mut names: Vec<String> = labels.to_vec();
    names.sort_unstable();
    names.dedup();
    if names.iter().all(|n| n.parse::<i64>().is_ok()) {
        names.sort_by_key(|n| n.parse::<i64>().unwrap_or(0));
    }
    names
}

/// Per feature, the mean and standard deviation (population; 1 where it is 0) of `rows`.
pub fn standardisation(values: &[f32], features: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = (values.len() / features.max(1)).max(1) as f64;
    let mut sum = vec![0.0f64; features];
    let mut squares = vec![0.0f64; features];
    for row in values.chunks_exact(features) {
        for (i, &v) in row.iter().enumerate() {
            sum[i] += v as f64;
            squares[i] += v as f64 * v as f64;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
    let std: Vec<f32> = squares
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let sd = (q / rows - m * m).max(0.0).sqrt();
            if sd > 1e-12 {
                sd as f32
            } else {
                1.0
            }
        })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, invalid: InvalidCells) -> std::result::Result<Table, String> {
        parse_table(text.as_bytes(), "species", invalid)
    }

    #[test]
    fn reads_features_and_labels_by_header() {
        let t = parse("a, species ,b\n1,x,2\n3.5,y,-4e1\n\n", InvalidCells::Error).unwrap();
        assert_eq!(t.features, ["a", "b"]);
        assert_eq!(t.values, [1.0, 2.0, 3.5, -40.0]);
        assert_eq!(t.labels, ["x", "y"]);
    }

    #[test]
    fn bad_cells_name_line_and_column_or_drop_their_row() {
        let e = parse("a,species\n1,x\nfoo,y\n", InvalidCells::Error).unwrap_err();
        assert_eq!(e, "line 3: column `a`: `foo` is not a number");
        let e = parse("a,species\n1,x\n,y\n", InvalidCells::Error).unwrap_err();
        assert_eq!(e, "line 3: column `a`: missing value");
        let e = parse("a,species\n1,\n", InvalidCells::Error).unwrap_err();
        assert_eq!(e, "line 2: column `species`: missing label");
        let e = parse("a,species\n1,x,3\n", InvalidCells::Drop).unwrap_err();
        assert_eq!(e, "line 2: 3 fields, expected 2 as in the header");
        let e = parse("a,b\n1,2\n", InvalidCells::Error).unwrap_err();
        assert!(e.contains("no column `species`"), "{e}");
        let e = parse("a,species\n", InvalidCells::Error).unwrap_err();
        assert!(e.contains("no data rows"), "{e}");
        let e = parse("a,species\nnan,x\n", InvalidCells::Error).unwrap_err();
        assert!(e.contains("not a finite number"), "{e}");
        let t = parse("a,species\n1,x\nfoo,y\n,z\n2,w\n", InvalidCells::Drop).unwrap();
        assert_eq!(
            (t.values, t.labels, t.dropped),
            (vec![1.0, 2.0], vec!["x".to_string(), "w".to_string()], 2)
        );
    }

    #[test]
    fn a_table_over_the_limit_is_an_error_not_a_shorter_table() {
        let text = "a,species\n1,x\n2,y\n";
        assert_eq!(text.len(), 18);
        assert!(parse_limited(text.as_bytes(), "species", InvalidCells::Error, 18).is_ok());
        // One byte short would cut the last row to `2,y`'s prefix: it must not load.
        let e = parse_limited(text.as_bytes(), "species", InvalidCells::Error, 17).unwrap_err();
        assert!(e.contains("larger than the limit of 17 bytes"), "{e}");
    }

    #[test]
    fn classes_sort_numerically_when_every_label_is_an_integer() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            class_names(&s(&["10", "2", "2", "-1"])),
            s(&["-1", "2", "10"])
        );
        assert_eq!(
            class_names(&s(&["b", "10", "a", "2"])),
            s(&["10", "2", "a", "b"])
        );
    }

    #[test]
    fn standardisation_is_the_population_mean_and_deviation() {
        let (mean, std) = standardisation(&[1.0, 5.0, 3.0, 5.0], 2);
        assert_eq!((mean, std), (vec![2.0, 5.0], vec![1.0, 1.0]));
        let (_, std) = standardisation(&[0.0, 0.0, 4.0, 0.0], 2);
        assert_eq!(std, vec![2.0, 1.0], "a constant column divides by 1");
    }
}
