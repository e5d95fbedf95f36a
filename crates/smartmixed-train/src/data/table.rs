//! CSV tables: a header row, numeric feature columns and one label column (integers or
//! strings). A missing or non-numeric cell is an error naming the row and the column, or
//! drops its row (`data.invalid = "drop"`). Reading streams record by record into the
//! final `f32` storage, bounded by the memory this process may still use.
//!
//! Column names are compared exactly (case and all) after the reader's trimming of
//! surrounding whitespace (`str::trim`); a name given twice is an error, in training's
//! tables and in `predict`'s rows alike, since both open files through [`open`].

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::precision::{ColumnPrecision, ImpreciseColumn};
use crate::InvalidCells;
use crate::{Error, Result};

/// The longest table file read, in bytes: a bound on reading time for endless input (blank
/// lines), not on memory (values are bounded by [`value_limit`]).
pub const MAX_TEXT_BYTES: u64 = 16 << 30;

/// The most bytes a table's values may take on any machine, whatever memory it reports.
pub const MAX_VALUE_BYTES: u64 = 16 << 30;

/// The longest record (header or row): a file without line ends, such as `/dev/zero`, is
/// refused at its first line instead of being buffered whole.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The most fields in a record.
pub const MAX_COLUMNS: usize = 1 << 16;

/// The most distinct labels a table may hold (a class index is a `u8`).
pub const MAX_LABELS: usize = 256;

/// Bytes a table row costs besides its values while loading: a label byte and two row
/// indices of the splits.
const ROW_OVERHEAD: u64 = 1 + 2 * std::mem::size_of::<usize>() as u64;

/// The bytes a table's values may take: a quarter of the memory this process may still use
/// (loading holds the values about twice while splitting, and training needs the rest), at
/// most [`MAX_VALUE_BYTES`].
pub fn value_limit() -> u64 {
    crate::memory::available_bytes().map_or(MAX_VALUE_BYTES, |a| (a / 4).min(MAX_VALUE_BYTES))
}

/// A table as read: feature names, row-major values, each row's label as an index into
/// the distinct label texts (a byte per row, not a string).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub features: Vec<String>,
    /// `rows() x features.len()` values, row-major.
    pub values: Vec<f32>,
    /// The distinct label texts, in order of first appearance.
    pub labels: Vec<String>,
    /// Per row, its label's index in `labels`.
    pub row_labels: Vec<u8>,
    /// Rows left out for an invalid cell (`InvalidCells::Drop`).
    pub dropped: usize,
    /// Feature columns that `f32` holds only coarsely for their spread.
    pub imprecise: Vec<ImpreciseColumn>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.row_labels.len()
    }
}

/// How much a read may take: bytes of text, bytes of values held.
#[derive(Debug, Clone, Copy)]
struct Limits {
    text: u64,
    values: u64,
}

impl Limits {
    fn of_memory() -> Self {
        Self {
            text: MAX_TEXT_BYTES,
            values: value_limit(),
        }
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

/// The CSV reader's states (csv_core's, for its default settings: `,`, `"` doubled to
/// escape, `\r`, `\n` or `\r\n` ending a record), tracked over the raw bytes so that what
/// the parser cannot report is caught: a quote left open at the end of the file (the
/// parser ends the field there, silently taking the rest of the file as one cell), an
/// endless record, too many fields.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scan {
    StartRecord,
    StartField,
    InField,
    InQuoted,
    /// A quote inside a quoted field: it closes the field or, doubled, is a quote.
    QuoteInQuoted,
}

/// A reader that fails, rather than stopping short, once more than `limit` bytes arrive
/// (a table over the limit is an error, never silently cut), and on the faults [`Scan`]
/// finds; its errors name the line.
struct Guarded<R> {
    inner: R,
    left: u64,
    limit: u64,
    state: Scan,
    /// 1 + the line ends seen (`\n`, `\r`, or `\r\n` as one: the csv crate's own count is
    /// one short on CRLF files and never moves on CR-only ones).
    line: u64,
    /// Whether the last byte scanned was `\r` (a `\n` after it ends no second line).
    after_cr: bool,
    /// Bytes scanned so far.
    scanned: u64,
    /// Byte offsets where lines begin that no record has been placed on yet (the parser
    /// reads ahead, so the current line is not the record's), and lines passed before them.
    starts: std::collections::VecDeque<u64>,
    passed: u64,
    /// The line the current record began on, its bytes and fields so far.
    record_line: u64,
    record_bytes: usize,
    fields: usize,
    /// The line the open quote began on.
    quote_line: u64,
}

impl<R: Read> Guarded<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            left: limit,
            limit,
            state: Scan::StartRecord,
            line: 1,
            after_cr: false,
            scanned: 0,
            starts: std::collections::VecDeque::new(),
            passed: 0,
            record_line: 1,
            record_bytes: 0,
            fields: 0,
            quote_line: 0,
        }
    }

    /// Follows the parser over `bytes`.
    fn scan(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let fail = |message: String| Err(std::io::Error::other(message));
        for (at, &b) in (self.scanned..).zip(bytes) {
            let end = b == b'\n' || b == b'\r';
            if end && !(b == b'\n' && self.after_cr) {
                self.line += 1;
                self.starts.push_back(at + 1);
            }
            self.after_cr = b == b'\r';
            if self.state == Scan::StartRecord && !end {
                (self.state, self.record_line) = (Scan::StartField, self.line);
                (self.record_bytes, self.fields) = (0, 1);
            }
            self.state = match (self.state, b) {
                (Scan::StartRecord, _) => Scan::StartRecord,
                (Scan::StartField, b'"') => {
                    self.quote_line = self.line;
                    Scan::InQuoted
                }
                (Scan::InQuoted, b'"') => Scan::QuoteInQuoted,
                (Scan::InQuoted, _) => Scan::InQuoted,
                (Scan::QuoteInQuoted, b'"') => Scan::InQuoted,
                (_, b',') => {
                    self.fields += 1;
                    Scan::StartField
                }
                (_, _) if end => Scan::StartRecord,
                (_, _) => Scan::InField,
            };
            if self.state != Scan::StartRecord {
                self.record_bytes += 1;
                if self.record_bytes > MAX_RECORD_BYTES {
                    let line = self.record_line;
                    return fail(format!(
                        "line {line} is longer than {MAX_RECORD_BYTES} bytes (no line end?)"
                    ));
                }
                if self.fields > MAX_COLUMNS {
                    let line = self.record_line;
                    return fail(format!("line {line} has more than {MAX_COLUMNS} fields"));
                }
            }
        }
        self.scanned += bytes.len() as u64;
        Ok(())
    }

    /// The line holding byte `offset`; offsets must not decrease from call to call (records
    /// come in order).
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.starts.front().is_some_and(|&s| s <= offset) {
            self.starts.pop_front();
            self.passed += 1;
        }
        1 + self.passed
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return match self.inner.read(&mut [0u8; 1])? {
                0 => self.scan_end(),
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
        if got == 0 {
            return self.scan_end();
        }
        self.left -= got as u64;
        self.scan(&buf[..got])?;
        Ok(got)
    }
}

impl<R> Guarded<R> {
    /// The end of the file: an error if a quoted field is still open.
    fn scan_end(&self) -> std::io::Result<usize> {
        if self.state == Scan::InQuoted {
            return Err(std::io::Error::other(format!(
                "line {}: unterminated quote (the quoted field opened there runs to the end of the file)",
                self.quote_line
            )));
        }
        Ok(0)
    }
}

/// A CSV reader over at most `limit` bytes of `reader` (cells trimmed, rows of any length:
/// callers check them) and its header, whose names must be distinct.
fn open<R: Read>(
    reader: R,
    limit: u64,
) -> std::result::Result<(csv::Reader<Guarded<R>>, Vec<String>), String> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(Guarded::new(reader, limit));
    let header: Vec<String> = csv
        .headers()
        .map_err(|e| describe(&e, Some(1)))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(header.len());
    for (c, name) in header.iter().enumerate() {
        if let Some(first) = seen.insert(name, c) {
            return Err(format!(
                "line 1: column `{name}` appears twice (columns {} and {}); expected distinct names",
                first + 1,
                c + 1
            ));
        }
    }
    Ok((csv, header))
}

/// [`read_table`] from any reader; the error names the line and the column.
pub fn parse_table(
    reader: impl Read,
    label: &str,
    invalid: InvalidCells,
) -> std::result::Result<Table, String> {
    parse_limited(reader, label, invalid, Limits::of_memory())
}

/// A record's field count against the header's (never dropped: the file's shape is
/// wrong, not a cell).
fn check_fields(record: &csv::ByteRecord, header: &[String]) -> std::result::Result<(), String> {
    if record.len() == header.len() {
        return Ok(());
    }
    Err(format!(
        "{} fields, expected {} as in the header",
        record.len(),
        header.len()
    ))
}

/// A record holding one empty field: a blank (or all-space) line, skipped.
fn is_blank(record: &csv::ByteRecord) -> bool {
    record.len() == 1 && record[0].is_empty()
}

/// Calls `f` with every record after the header that is not blank, and the line it
/// starts on, once its field count is checked against the header's.
fn each_record<R: Read>(
    csv: &mut csv::Reader<Guarded<R>>,
    header: &[String],
    mut f: impl FnMut(&csv::ByteRecord, u64) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let mut record = csv::ByteRecord::new();
    while csv.read_byte_record(&mut record).map_err(|e| {
        let line = e.position().map(|p| csv.get_mut().line_at(p.byte()));
        describe(&e, line)
    })? {
        let byte = record.position().map_or(0, |p| p.byte());
        let line = csv.get_mut().line_at(byte);
        if is_blank(&record) {
            continue;
        }
        check_fields(&record, header).map_err(|e| format!("line {line}: {e}"))?;
        f(&record, line)?;
    }
    Ok(())
}

/// [`parse_table`] within `limits`.
fn parse_limited(
    reader: impl Read,
    label: &str,
    invalid: InvalidCells,
    limits: Limits,
) -> std::result::Result<Table, String> {
    let (mut csv, header) = open(reader, limits.text)?;
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
    // Per row: its values, its label byte and the two row indices (`usize`) the
    // stratified splits hold; `features` is at most MAX_COLUMNS.
    let row_bytes = (features.len() as u64 * 4).saturating_add(ROW_OVERHEAD);
    let mut table = Table {
        features,
        values: Vec::new(),
        labels: Vec::new(),
        row_labels: Vec::new(),
        dropped: 0,
        imprecise: Vec::new(),
    };
    let mut precision = ColumnPrecision::new(table.features.len());
    let mut exact = Vec::with_capacity(header.len() - 1);
    // Label text -> index in `table.labels`; the texts are held twice (here and there).
    let mut interned: HashMap<Box<[u8]>, u8> = HashMap::new();
    let mut label_bytes = 0u64;
    // The labels that are numbers, with the line each first appeared on: `0` and `0.0`
    // (a column written by two tools) would otherwise be two classes.
    let mut numeric: Vec<(f64, usize, u64)> = Vec::new();
    let mut row = Vec::with_capacity(header.len() - 1);
    each_record(&mut csv, &header, |record, line| {
        match parse_row(record, &header, label_col, &mut row, &mut exact) {
            Ok(()) => {}
            Err(_) if invalid == InvalidCells::Drop => {
                table.dropped += 1;
                return Ok(());
            }
            Err(e) => return Err(format!("line {line}: {e}")),
        }
        let text = &record[label_col];
        let index = match interned.get(text) {
            Some(&i) => i,
            None => {
                let i = u8::try_from(table.labels.len()).map_err(|_| {
                    format!(
                        "line {line}: column `{label}`: more than {MAX_LABELS} distinct labels, expected at most {MAX_LABELS} classes"
                    )
                })?;
                // `parse_row` checked that the label is UTF-8.
                let name = String::from_utf8_lossy(text).into_owned();
                if let Ok(x) = name.parse::<f64>() {
                    if let Some(&(_, j, first)) = numeric.iter().find(|(y, ..)| *y == x) {
                        return Err(format!(
                            "line {line}: column `{label}`: label `{name}` is the number of label `{}` (line {first}) written another way, expected one spelling per class",
                            table.labels[j]
                        ));
                    }
                    numeric.push((x, table.labels.len(), line));
                }
                table.labels.push(name);
                interned.insert(text.into(), i);
                label_bytes = label_bytes.saturating_add(2 * text.len() as u64);
                i
            }
        };
        let rows = table.row_labels.len() as u64 + 1;
        let need = rows.saturating_mul(row_bytes).saturating_add(label_bytes);
        if need > limits.values {
            return Err(format!(
                "line {line}: the table's values would take more than {} bytes, the limit (a quarter of the memory available, at most {MAX_VALUE_BYTES})",
                limits.values
            ));
        }
        table
            .values
            .try_reserve(row.len())
            .map_err(|_| format!("line {line}: out of memory for the table's values"))?;
        table.values.extend_from_slice(&row);
        table.row_labels.push(index);
        precision.add(&exact, &row);
        Ok(())
    })?;
    if table.rows() == 0 {
        return Err("no data rows, expected at least one after the header".into());
    }
    table.values.shrink_to_fit();
    table.imprecise = precision.imprecise(&table.features);
    Ok(table)
}

/// A cell as a finite number, as held (`f32`, rounded once from the text) and as written
/// (`f64`, for [`ColumnPrecision`]); the error says what the cell is instead.
fn number(cell: &[u8]) -> std::result::Result<(f32, f64), String> {
    let text = String::from_utf8_lossy(cell);
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok((v, text.parse::<f64>().unwrap_or(f64::from(v)))),
        Ok(_) => Err(format!("`{text}` is not a finite number")),
        Err(_) if cell.is_empty() => Err("missing value".into()),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// One record's features into `row` (its field count already checked); the error names
/// the column.
fn parse_row(
    record: &csv::ByteRecord,
    header: &[String],
    label_col: usize,
    row: &mut Vec<f32>,
    exact: &mut Vec<f64>,
) -> std::result::Result<(), String> {
    row.clear();
    exact.clear();
    for (c, cell) in record.iter().enumerate() {
        if c == label_col {
            if cell.is_empty() {
                return Err(format!("column `{}`: missing label", header[c]));
            }
            if std::str::from_utf8(cell).is_err() {
                return Err(format!(
                    "column `{}`: the label is not UTF-8 text",
                    header[c]
                ));
            }
            continue;
        }
        let (held, written) = number(cell).map_err(|e| format!("column `{}`: {e}", header[c]))?;
        row.push(held);
        exact.push(written);
    }
    Ok(())
}

/// The column names of `path`'s header (trimmed, distinct), as [`read_table`] reads them:
/// `eval` looks for the label column among them.
pub fn read_header(path: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot read table", e))?;
    let mismatch = |message| Error::Mismatch {
        path: path.to_path_buf(),
        message,
    };
    let (_, header) = open(file, MAX_TEXT_BYTES).map_err(mismatch)?;
    Ok(header)
}

/// Rows to classify from a CSV file with a header: the columns named `features`, in that
/// order (other columns, such as a label, are ignored), or every column when `features` is
/// empty, then exactly `width` of them, held back to back (row-major, 4 bytes a value).
/// Errors name the file, line and column.
pub fn read_rows(path: &Path, features: &[String], width: usize) -> Result<Vec<f32>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot read rows", e))?;
    parse_rows(file, features, width, Limits::of_memory()).map_err(|message| Error::Mismatch {
        path: path.to_path_buf(),
        message,
    })
}

/// [`read_rows`] from any reader, within `limits`.
fn parse_rows(
    reader: impl Read,
    features: &[String],
    width: usize,
    limits: Limits,
) -> std::result::Result<Vec<f32>, String> {
    let mut seen = HashMap::with_capacity(features.len());
    if let Some(f) = features
        .iter()
        .find(|f| seen.insert(f.as_str(), ()).is_some())
    {
        return Err(format!(
            "the model names feature `{f}` twice, so its columns cannot be told apart"
        ));
    }
    let (mut csv, header) = open(reader, limits.text)?;
    let columns: Vec<usize> = if features.is_empty() {
        (0..header.len()).collect()
    } else {
        features
            .iter()
            .map(|f| {
                header.iter().position(|h| h == f).ok_or_else(|| {
                    format!("line 1: no column `{f}`, a feature the model was trained on")
                })
            })
            .collect::<std::result::Result<_, _>>()?
    };
    if columns.len() != width {
        return Err(format!(
            "line 1: {} columns, the model expects {width} features",
            columns.len()
        ));
    }
    // Rows are held back to back, 4 bytes a value.
    let mut rows: Vec<f32> = Vec::new();
    each_record(&mut csv, &header, |record, line| {
        if (rows.len() as u64 + width as u64).saturating_mul(4) > limits.values {
            return Err(format!(
                "line {line}: the rows would take more than {} bytes, the limit (a quarter of the memory available, at most {MAX_VALUE_BYTES})",
                limits.values
            ));
        }
        for &c in &columns {
            let (value, _) = number(&record[c])
                .map_err(|e| format!("line {line}: column `{}`: {e}", header[c]))?;
            rows.push(value);
        }
        Ok(())
    })?;
    if rows.is_empty() {
        return Err("no rows after the header".into());
    }
    Ok(rows)
}

/// A csv error in one line (the guard's errors name their line themselves); `line` is
/// where it is, if known.
fn describe(e: &csv::Error, line: Option<u64>) -> String {
    if let csv::ErrorKind::Io(io) = e.kind() {
        return io.to_string();
    }
    let line = line.or(e.position().map(|p| p.line())).unwrap_or(0);
    // The csv crate's text repeats its own (CRLF-blind) line count: only its cause is kept.
    let text = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 in field {}", err.field() + 1),
        _ => e.to_string().replace('\n', " "),
    };
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

/// The first feature whose standardisation, with `divisor`, scales or shifts raw values by
/// more than an export can hold (`MAX_PREPROCESSED`, which `InputManifest::check`
/// enforces): a column spread over less than about 1e-30. Training on it would finish and
/// only `export` would refuse it.
pub fn unscalable(mean: &[f32], std: &[f32], divisor: f32) -> Option<usize> {
    use smartmixed_core::manifest::MAX_PREPROCESSED;
    (0..std.len().min(mean.len())).find(|&i| {
        let sd = f64::from(std[i]);
        let scale = 1.0 / (f64::from(divisor) * sd);
        let offset = f64::from(mean[i]) / sd;
        !(scale <= MAX_PREPROCESSED && offset.abs() <= MAX_PREPROCESSED)
    })
}

/// What [`unscalable`] found, as an error message naming the column.
pub fn unscalable_message(names: &[String], i: usize, std: f32) -> String {
    let name = names
        .get(i)
        .map_or_else(|| i.to_string(), |n| n.escape_debug().to_string());
    format!(
        "column `{name}`: a standard deviation of {std:e}, too little against its values to standardise (an export scales and shifts raw values by at most 1e30); rescale the column or set data.standardize = false"
    )
}

/// Per feature, the mean and standard deviation (population) of `rows`; the deviation is
/// 1 for a constant feature (or one too small for a normal f32). Two passes in f64: the
/// mean, then the squared deviations from it, so a large offset costs no precision
/// (`E[x^2] - E[x]^2` lost all of it at 1e6 +- 0.01), and no absolute floor (1e-12 had
/// left features of tiny units unscaled).
pub fn standardisation(values: &[f32], features: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = (values.len() / features.max(1)).max(1) as f64;
    let mut sum = vec![0.0f64; features];
    for row in values.chunks_exact(features) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
    let mut squares = vec![0.0f64; features];
    for row in values.chunks_exact(features) {
        for ((q, &v), m) in squares.iter_mut().zip(row).zip(&mean) {
            *q += (f64::from(v) - m).powi(2);
        }
    }
    let std: Vec<f32> = squares
        .iter()
        .map(|q| {
            let sd = (q / rows).sqrt() as f32;
            if sd.is_normal() {
                sd
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

    fn rows(
        text: &str,
        features: &[&str],
        width: usize,
    ) -> std::result::Result<Vec<Vec<f32>>, String> {
        let features: Vec<String> = features.iter().map(|f| f.to_string()).collect();
        parse_rows(text.as_bytes(), &features, width, Limits::of_memory())
            .map(|flat| flat.chunks(width).map(<[f32]>::to_vec).collect())
    }

    /// Each row's label text.
    fn row_texts(t: &Table) -> Vec<&str> {
        t.row_labels
            .iter()
            .map(|&i| t.labels[i as usize].as_str())
            .collect()
    }

    #[test]
    fn reads_features_and_labels_by_header() {
        let t = parse(
            "a, species ,b\n1,x,2\n3.5,y,-4e1\n\n5,x,6\n",
            InvalidCells::Error,
        )
        .unwrap();
        assert_eq!(t.features, ["a", "b"]);
        assert_eq!(t.values, [1.0, 2.0, 3.5, -40.0, 5.0, 6.0]);
        assert_eq!(
            t.labels,
            ["x", "y"],
            "each text once, in order of appearance"
        );
        assert_eq!(t.row_labels, [0, 1, 0]);
        // Labels are kept as read, control characters included.
        let t = parse("a,species\n1, \x1b[31mred\x1b[0m \n", InvalidCells::Error).unwrap();
        assert_eq!(t.labels, ["\x1b[31mred\x1b[0m"]);
        // A quoted label keeps its comma, its line end and its doubled quote.
        let t = parse("a,species\n1,\"x, \"\"y\"\"\nz\"\n", InvalidCells::Error).unwrap();
        assert_eq!(row_texts(&t), ["x, \"y\"\nz"]);
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
            (&t.values, row_texts(&t), t.dropped),
            (&vec![1.0, 2.0], vec!["x", "w"], 2)
        );
        assert_eq!(t.labels, ["x", "w"], "a dropped row's label is no class");
    }

    #[test]
    fn a_repeated_column_name_is_an_error_naming_line_1_and_the_name() {
        let e = parse("a,a,species\n1,2,x\n", InvalidCells::Error).unwrap_err();
        assert_eq!(
            e,
            "line 1: column `a` appears twice (columns 1 and 2); expected distinct names"
        );
        // Names are compared after trimming, exactly otherwise.
        let e = parse(" a ,b,\"a\",species\n1,2,3,x\n", InvalidCells::Error).unwrap_err();
        assert!(
            e.starts_with("line 1: column `a` appears twice (columns 1 and 3)"),
            "{e}"
        );
        let t = parse("A,a,species\n1,2,x\n", InvalidCells::Error).unwrap();
        assert_eq!(t.features, ["A", "a"]);
        // A second label column is not read as a feature.
        let e = parse(
            "a,species,b,species\n1,alpha,2,alpha\n",
            InvalidCells::Error,
        )
        .unwrap_err();
        assert!(
            e.starts_with("line 1: column `species` appears twice (columns 2 and 4)"),
            "{e}"
        );
        // Predict's reader applies the same rule, to the file and to the model's names.
        let e = rows("a ,b, a\n1,2,3\n", &["a", "b"], 2).unwrap_err();
        assert!(
            e.starts_with("line 1: column `a` appears twice (columns 1 and 3)"),
            "{e}"
        );
        let e = rows("a,b\n1,2\n", &["a", "a"], 2).unwrap_err();
        assert!(e.contains("the model names feature `a` twice"), "{e}");
        assert_eq!(rows(" b,a \n1,2\n", &["a", "b"], 2).unwrap(), [[2.0, 1.0]]);
    }

    #[test]
    fn an_unterminated_quote_is_named_with_its_line() {
        // The csv crate ends an open quote at the end of the file: the rest of the file
        // would be one label.
        let text = "a,species\n1,x\n2,\"y\n3,z\n4,x\n";
        let e = parse(text, InvalidCells::Error).unwrap_err();
        assert_eq!(
            e,
            "line 3: unterminated quote (the quoted field opened there runs to the end of the file)"
        );
        assert_eq!(rows(text, &["a"], 1).unwrap_err(), e);
        let e = parse("\"a,species\n1,x\n", InvalidCells::Drop).unwrap_err();
        assert!(e.starts_with("line 1: unterminated quote"), "{e}");
        // A quote inside an unquoted cell is a character, and a closed quote is closed.
        let e = parse("a,species\n1\"2,x\n", InvalidCells::Error).unwrap_err();
        assert_eq!(e, "line 2: column `a`: `1\"2` is not a number");
        let t = parse("a,species\n\"1\",\"x\"\"\"\n", InvalidCells::Error).unwrap();
        assert_eq!((&t.values, row_texts(&t)), (&vec![1.0], vec!["x\""]));
    }

    #[test]
    fn an_endless_record_is_refused_at_its_line() {
        let e = parse_table(std::io::repeat(0), "species", InvalidCells::Error).unwrap_err();
        assert_eq!(
            e,
            format!("line 1 is longer than {MAX_RECORD_BYTES} bytes (no line end?)")
        );
        let endless_row = "a,species\n".as_bytes().chain(std::io::repeat(b'7'));
        let e = parse_table(endless_row, "species", InvalidCells::Drop).unwrap_err();
        assert!(e.starts_with("line 2 is longer than"), "{e}");
        let e = parse_rows(
            std::io::repeat(b'\n').take(3).chain(std::io::repeat(0)),
            &[],
            1,
            Limits::of_memory(),
        )
        .unwrap_err();
        assert!(e.starts_with("line 4 is longer than"), "{e}");
        let e = parse_table(std::io::repeat(b','), "species", InvalidCells::Error).unwrap_err();
        assert_eq!(e, format!("line 1 has more than {MAX_COLUMNS} fields"));
        // The longest line allowed is read.
        let long = format!("a,species\n{}1,x\n", " ".repeat(MAX_RECORD_BYTES - 3));
        assert_eq!(parse(&long, InvalidCells::Error).unwrap().values, [1.0]);
    }

    #[test]
    fn a_table_over_the_limit_is_an_error_not_a_shorter_table() {
        let text = "a,species\n1,x\n2,y\n";
        assert_eq!(text.len(), 18);
        let limits = |text| Limits {
            text,
            values: u64::MAX,
        };
        assert!(parse_limited(text.as_bytes(), "species", InvalidCells::Error, limits(18)).is_ok());
        // One byte short would cut the last row to `2,y`'s prefix: it must not load.
        let e =
            parse_limited(text.as_bytes(), "species", InvalidCells::Error, limits(17)).unwrap_err();
        assert!(e.contains("larger than the limit of 17 bytes"), "{e}");
    }

    #[test]
    fn values_beyond_the_limit_are_refused_before_they_are_held() {
        // Three rows of two features, a label byte and two indices (8 + 1 + 16 bytes
        // each on 64-bit targets), labels `x` and `y` held twice (4 bytes): 79 bytes.
        let text = "a,b,species\n1,2,x\n3,4,y\n5,6,x\n";
        let limits = |values| Limits {
            text: u64::MAX,
            values,
        };
        let need = 3 * (8 + ROW_OVERHEAD) + 4;
        #[cfg(target_pointer_width = "64")]
        assert_eq!(need, 79);
        let t = parse_limited(
            text.as_bytes(),
            "species",
            InvalidCells::Error,
            limits(need),
        )
        .unwrap();
        assert_eq!(t.values.len(), t.rows() * t.features.len());
        let e = parse_limited(
            text.as_bytes(),
            "species",
            InvalidCells::Error,
            limits(need - 1),
        )
        .unwrap_err();
        let limit = need - 1;
        assert!(
            e.starts_with(&format!(
                "line 4: the table's values would take more than {limit} bytes"
            )),
            "{e}"
        );
        // Rows for predict, held back to back: 2 x 2 x 4 bytes.
        let two = "a,b\n1,2\n3,4\n";
        assert_eq!(
            parse_rows(two.as_bytes(), &[], 2, limits(16)).unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
        let e = parse_rows(two.as_bytes(), &[], 2, limits(15)).unwrap_err();
        assert!(
            e.starts_with("line 3: the rows would take more than 15 bytes"),
            "{e}"
        );
        // Other tests allocate meanwhile: the limit is read between two readings of the
        // available memory and held to the larger (one reading after it had failed in CI).
        let available = || crate::memory::available_bytes().unwrap_or(u64::MAX);
        let before = available();
        let limit = value_limit();
        let after = available();
        assert!(limit <= MAX_VALUE_BYTES && limit <= before.max(after) / 4);
    }

    /// `0` and `0.0` (a column written by two tools) were two classes of one label.
    #[test]
    fn one_number_spelt_two_ways_is_refused_as_a_label() {
        for (a, b) in [
            ("0", "0.0"),
            ("1", "1e0"),
            ("2", "+2"),
            ("0", "-0"),
            ("3", "03"),
        ] {
            let text = format!("a,species\n1,{a}\n2,x\n3,{b}\n");
            assert_eq!(
                parse(&text, InvalidCells::Error).unwrap_err(),
                format!("line 4: column `species`: label `{b}` is the number of label `{a}` (line 2) written another way, expected one spelling per class")
            );
        }
        // Numbers that differ, and texts that merely look alike, are classes of their own.
        let t = parse(
            "a,species\n1,0\n2,0.5\n3,1\n4,nan\n5,NaN\n6,O\n",
            InvalidCells::Error,
        )
        .unwrap();
        assert_eq!(t.labels, ["0", "0.5", "1", "nan", "NaN", "O"]);
    }

    #[test]
    fn more_labels_than_classes_are_refused_at_the_first_extra() {
        let mut text = String::from("a,species\n");
        for i in 0..=MAX_LABELS {
            text.push_str(&format!("1,c{i}\n"));
        }
        let e = parse(&text, InvalidCells::Error).unwrap_err();
        assert_eq!(
            e,
            format!("line {}: column `species`: more than 256 distinct labels, expected at most 256 classes", MAX_LABELS + 2)
        );
        let cut = text.rfind("1,c256").unwrap();
        assert_eq!(
            parse(&text[..cut], InvalidCells::Error)
                .unwrap()
                .labels
                .len(),
            256
        );
    }

    #[test]
    fn a_short_row_to_predict_names_its_fields_like_training() {
        let e = rows("a,b,c\n1,2,3\n1,2\n", &["c", "a"], 2).unwrap_err();
        assert_eq!(e, "line 3: 2 fields, expected 3 as in the header");
        let e = rows("a,b\n1,\n", &[], 2).unwrap_err();
        assert_eq!(e, "line 2: column `b`: missing value");
        assert_eq!(
            rows("a,b,c\n1,2,3\n\n4,5,6\n", &["c", "a"], 2).unwrap(),
            [[3.0, 1.0], [6.0, 4.0]]
        );
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
    fn a_column_too_narrow_to_standardise_is_found() {
        let (mean, std) = standardisation(&[0.0, 1.0, 1e-31, 2.0, 0.0, 3.0, 1e-31, 4.0], 2);
        assert_eq!(unscalable(&mean, &std, 1.0), Some(0), "{std:?}");
        let (mean, std) = standardisation(&[0.0, 1.0, 1e-13, 2.0], 2);
        assert_eq!(unscalable(&mean, &std, 1.0), None);
        // A huge offset against a modest spread: 1e30 +- 1e-2 in f32 is a constant column.
        assert_eq!(unscalable(&[1e30], &[1e-2], 1.0), Some(0));
    }

    #[test]
    fn standardisation_is_the_population_mean_and_deviation() {
        let (mean, std) = standardisation(&[1.0, 5.0, 3.0, 5.0], 2);
        assert_eq!((mean, std), (vec![2.0, 5.0], vec![1.0, 1.0]));
        let (_, std) = standardisation(&[0.0, 0.0, 4.0, 0.0], 2);
        assert_eq!(std, vec![2.0, 1.0], "a constant column divides by 1");
        // Tiny units are scaled (a floor of 1e-12 had left them as they were).
        let (_, std) = standardisation(&[1e-13, 3e-13], 1);
        assert!((std[0] / 1e-13 - 1.0).abs() < 1e-6, "{std:?}");
        // A large offset (1e7 +- 1, exact in f32): E[x^2] - E[x]^2 in f64 is 1e14 - 1e14
        // there, off by about 1e-2 of the variance.
        let values: Vec<f32> = (0..1000)
            .map(|i| 1e7 + [-1.0, 1.0][i % 2] + (i % 3) as f32)
            .collect();
        let (mean, std) = standardisation(&values, 1);
        let m = values.iter().map(|&v| f64::from(v)).sum::<f64>() / 1000.0;
        let sd = (values
            .iter()
            .map(|&v| (f64::from(v) - m).powi(2))
            .sum::<f64>()
            / 1000.0)
            .sqrt();
        assert!((f64::from(std[0]) / sd - 1.0).abs() < 1e-6, "{std:?} {sd}");
        assert_eq!(mean, [m as f32]);
    }
}
