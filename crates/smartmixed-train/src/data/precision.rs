//! Which table columns `f32` cannot hold: a column whose values sit far from zero compared
//! with their spread (Unix times, 1.7e9 + 10 x) rounds to a few `f32` values when it is
//! read, before any standardisation can help. Training goes on (the model sees what `f32`
//! holds, as the runtime will), but the loader says so instead of degrading in silence.

use std::fmt;

/// The rounding to `f32` that is reported: more than this share of the column's
/// (population) standard deviation, as the text gave the values.
pub const REPORTED_SHARE: f64 = 0.01;

/// A column whose values lose more than [`REPORTED_SHARE`] of their spread to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpreciseColumn {
    /// The column's name in the header.
    pub column: String,
    /// The largest `|text - f32(text)|` of its cells.
    pub rounding: f64,
    /// The standard deviation of its values as the text gives them (in `f64`).
    pub std: f64,
    /// The largest magnitude among its values.
    pub magnitude: f64,
}

impl fmt::Display for ImpreciseColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "column `{}`: values up to {:e} vary by a standard deviation of {:e}, but f32 holds them only to within {:e}; subtract an offset from the column (or rescale it) for the model to see its differences",
            self.column, self.magnitude, self.std, self.rounding
        )
    }
}

/// Per column, running statistics of the values as the text gave them (Welford's update in
/// `f64`) and the largest rounding to `f32`.
#[derive(Debug, Clone, Default)]
pub struct ColumnPrecision {
    columns: Vec<Column>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Column {
    rows: f64,
    mean: f64,
    squares: f64,
    rounding: f64,
    magnitude: f64,
}

impl ColumnPrecision {
    pub fn new(columns: usize) -> Self {
        Self {
            columns: vec![Column::default(); columns],
        }
    }

    /// Adds one row: each column's value as parsed in `f64` and as held in `f32`.
    pub fn add(&mut self, exact: &[f64], held: &[f32]) {
        for ((c, &x), &v) in self.columns.iter_mut().zip(exact).zip(held) {
            c.rows += 1.0;
            let delta = x - c.mean;
            c.mean += delta / c.rows;
            c.squares += delta * (x - c.mean);
            c.rounding = c.rounding.max((x - f64::from(v)).abs());
            c.magnitude = c.magnitude.max(x.abs());
        }
    }

    /// The columns (named by `names`) that lose more than [`REPORTED_SHARE`] of their
    /// spread; constant columns lose nothing that standardisation keeps.
    pub fn imprecise(&self, names: &[String]) -> Vec<ImpreciseColumn> {
        self.columns
            .iter()
            .zip(names)
            .filter_map(|(c, name)| {
                let std = (c.squares / c.rows.max(1.0)).max(0.0).sqrt();
                (std > 0.0 && c.rounding > REPORTED_SHARE * std).then(|| ImpreciseColumn {
                    column: name.clone(),
                    rounding: c.rounding,
                    std,
                    magnitude: c.magnitude,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imprecise(rows: &[[f64; 2]]) -> Vec<ImpreciseColumn> {
        let mut p = ColumnPrecision::new(2);
        for r in rows {
            p.add(r, &[r[0] as f32, r[1] as f32]);
        }
        p.imprecise(&["t".into(), "x".into()])
    }

    #[test]
    fn a_large_offset_with_a_small_spread_is_reported_and_ordinary_columns_are_not() {
        // f32 spacing at 1.7e9 is 128: the times 1.7e9 + 10 k round to within 64.
        let rows: Vec<[f64; 2]> = (0..100)
            .map(|k| [1.7e9 + 10.0 * f64::from(k), 0.1 * f64::from(k)])
            .collect();
        let found = imprecise(&rows);
        assert_eq!(found.len(), 1, "{found:?}");
        let t = &found[0];
        assert_eq!(t.column, "t");
        assert!(t.rounding > 1.0 && t.rounding <= 64.0, "{t:?}");
        // The population deviation of 10 k for k < 100: 10 sqrt((100^2 - 1) / 12).
        let expected = 10.0 * ((100.0f64 * 100.0 - 1.0) / 12.0).sqrt();
        assert!((t.std - expected).abs() < 1e-6 * expected, "{t:?}");
        assert_eq!(t.magnitude, 1.7e9 + 990.0);
        assert!(t.to_string().starts_with("column `t`: values up to"), "{t}");
    }

    #[test]
    fn rounding_below_the_share_and_constant_columns_are_not_reported() {
        // 1e6 + k: f32 holds integers to 2^24 exactly.
        let rows: Vec<[f64; 2]> = (0..50).map(|k| [1e6 + f64::from(k), 3.7]).collect();
        assert!(imprecise(&rows).is_empty());
        // 1e7 + 0.1 k: f32 spacing 1, rounding up to 0.5 against a deviation of 1.44.
        let rows: Vec<[f64; 2]> = (0..50).map(|k| [1e7 + 0.1 * f64::from(k), 1.0]).collect();
        assert_eq!(imprecise(&rows).len(), 1);
    }
}
