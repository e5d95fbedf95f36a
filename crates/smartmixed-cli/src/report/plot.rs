//! Figures with plotters, each rendered in memory as SVG and PNG (text drawn with the
//! bundled DejaVu Sans, so PNGs render the same on machines without system fonts), their
//! pixel size and point counts bounded.

use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (900, 560);
/// The most panels a grid draws (callers pool layers into at most this many bands).
pub const MAX_PANELS: usize = 24;
/// The largest figure in pixels: a grid of [`MAX_PANELS`] panels, three to a row.
const MAX_SIZE: (u32, u32) = (3 * 600, 8 * 380);
/// The most points a line series draws; longer series are thinned evenly (the last point
/// kept), so that an SVG's size stays bounded however many epochs a run has.
const MAX_POINTS: usize = 1000;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid; registration only fails on unparsable bytes.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A colour per series, stable across figures.
pub fn colour(i: usize) -> RGBColor {
    const P: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    P[i % P.len()]
}

/// A figure, drawable on any plotters backend.
pub enum Figure {
    Lines {
        title: String,
        x_label: String,
        y_label: String,
        series: Vec<Series>,
        /// Vertical lines at these x values, named in the legend (an epoch where a phase
        /// ended, the selected checkpoint).
        markers: Vec<(f64, String)>,
    },
    Bars {
        title: String,
        y_label: String,
        groups: Vec<String>,
        series: Vec<String>,
        values: Vec<Vec<f64>>,
    },
    Heatmap {
        title: String,
        rows: Vec<String>,
        cols: Vec<String>,
        values: Vec<Vec<Option<f64>>>,
    },
    /// Panels laid out in a grid of `columns`.
    Grid { columns: usize, panels: Vec<Figure> },
}

impl Figure {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        match self {
            Figure::Lines {
                title,
                x_label,
                y_label,
                series,
                markers,
            } => lines(area, title, (x_label, y_label), series, markers),
            Figure::Bars {
                title,
                y_label,
                groups,
                series,
                values,
            } => {
                if series.len() > 1 {
                    let (plot, key) = beside_legend(area);
                    let entries: Vec<_> = series.iter().map(|n| (n.clone(), Key::Box)).collect();
                    legend(&key, &entries)?;
                    grouped_bars(&plot, title, y_label, groups, series, values)
                } else {
                    grouped_bars(area, title, y_label, groups, series, values)
                }
            }
            Figure::Heatmap {
                title,
                rows,
                cols,
                values,
            } => heatmap(area, title, rows, cols, values),
            Figure::Grid { columns, panels } => {
                let (cols, rows) = grid_shape(*columns, panels.len());
                for (panel, sub) in panels.iter().zip(area.split_evenly((rows, cols))) {
                    panel.draw(&sub)?;
                }
                Ok(())
            }
        }
    }

    /// Pixel size: grids grow with their panels, up to [`MAX_SIZE`].
    fn size(&self) -> (u32, u32) {
        match self {
            Figure::Grid { columns, panels } => {
                let (cols, rows) = grid_shape(*columns, panels.len());
                (
                    (cols as u32 * 600).min(MAX_SIZE.0),
                    (rows as u32 * 380).min(MAX_SIZE.1),
                )
            }
            // Wide enough for every group's tick label (Table II's 18 architectures, Fig. 3's
            // up to 24 bands of layers).
            Figure::Bars { groups, .. } => (
                (200 + 70 * groups.len() as u32).clamp(SIZE.0, MAX_SIZE.0),
                SIZE.1,
            ),
            _ => SIZE,
        }
    }

    /// The figure as SVG text and PNG bytes, rendered in memory: the caller writes them
    /// (atomically), so a figure that fails to draw leaves no file behind.
    pub fn render(&self) -> Result<(String, Vec<u8>)> {
        register_font();
        let (w, h) = self.size();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| anyhow!("SVG: {e}"))?;
            self.draw(&root)?;
            root.present().map_err(|e| anyhow!("SVG: {e}"))?;
        }
        // At most MAX_SIZE: 1800 x 3040 x 3 bytes = 16 MB.
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| anyhow!("PNG: {e}"))?;
            self.draw(&root)?;
            root.present().map_err(|e| anyhow!("PNG: {e}"))?;
        }
        let mut png = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png, w, h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header()
                .and_then(|mut writer| writer.write_image_data(&rgb))
                .map_err(|e| anyhow!("PNG: {e}"))?;
        }
        Ok((svg, png))
    }
}

/// Columns and rows of a grid of `panels` (at most [`MAX_PANELS`] of them drawn, at most
/// three to a row).
fn grid_shape(columns: usize, panels: usize) -> (usize, usize) {
    let cols = columns.clamp(1, 3);
    let rows = panels.min(MAX_PANELS).div_ceil(cols).max(1);
    (cols, rows)
}

/// At most [`MAX_POINTS`] of `points`, evenly spaced, the last one kept.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let step = points.len().div_ceil(MAX_POINTS);
    let mut kept: Vec<(f64, f64)> = points.iter().step_by(step).copied().collect();
    if !(points.len() - 1).is_multiple_of(step) {
        kept.extend(points.last());
    }
    kept
}

/// The name of the category at integer position `x`, or nothing between categories.
fn category(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    names.get(i as usize).cloned().unwrap_or_default()
}

/// Series of (x, y) points with a name.
pub type Series = (String, Vec<(f64, f64)>);

/// Coordinates beyond this magnitude are left out of figures: plotters' tick computation
/// never ends on infinite or near-`f64::MAX` ranges.
const MAX_COORDINATE: f64 = 1e12;

fn drawable_value(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_COORDINATE
}

/// The points a figure can show, and how many were left out (non-finite or beyond
/// [`MAX_COORDINATE`]); a series left with no point is dropped.
pub fn drawable(series: Vec<Series>) -> (Vec<Series>, usize) {
    let mut left_out = 0;
    let kept = series
        .into_iter()
        .filter_map(|(name, points)| {
            let before = points.len();
            let points: Vec<(f64, f64)> = points
                .into_iter()
                .filter(|&(x, y)| drawable_value(x) && drawable_value(y))
                .collect();
            left_out += before - points.len();
            (!points.is_empty()).then_some((name, points))
        })
        .collect();
    (kept, left_out)
}

/// Width of the legend column beside a chart: legends never cover data.
const LEGEND_WIDTH: u32 = 170;

/// The chart's area and, to its right, the legend's.
fn beside_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
) -> (DrawingArea<DB, Shift>, DrawingArea<DB, Shift>) {
    let (w, _) = area.dim_in_pixel();
    area.split_horizontally(w.saturating_sub(LEGEND_WIDTH))
}

/// How a legend entry is drawn: a line, a dashed marker line or a filled box.
#[derive(Clone, Copy)]
enum Key {
    Line,
    Marker,
    Box,
}

/// Legend entries, coloured by position (markers in grey), top to bottom.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Key)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let draw = |e: Result<(), DrawingAreaErrorKind<DB::ErrorType>>| e.map_err(|e| anyhow!("{e}"));
    let (mut line, mut marker) = (0, 0);
    for (row, (name, key)) in entries.iter().enumerate() {
        let y = 60 + 24 * row as i32;
        let c = match key {
            Key::Marker => {
                marker += 1;
                marker_colour(marker - 1)
            }
            _ => colour(line),
        };
        match key {
            Key::Line => {
                draw(area.draw(&PathElement::new(vec![(6, y), (28, y)], c.stroke_width(2))))?
            }
            Key::Marker => {
                for x in [6, 15, 24] {
                    draw(area.draw(&PathElement::new(
                        vec![(x, y), (x + 5, y)],
                        c.stroke_width(2),
                    )))?
                }
            }
            Key::Box => draw(area.draw(&Rectangle::new([(8, y - 6), (24, y + 6)], c.filled())))?,
        }
        draw(area.draw(&Text::new(name.clone(), (34, y - 8), ("sans-serif", 14))))?;
        if !matches!(key, Key::Marker) {
            line += 1;
        }
    }
    Ok(())
}

/// Marker lines: grey, then dark red.
fn marker_colour(i: usize) -> RGBColor {
    [RGBColor(90, 90, 90), RGBColor(170, 30, 30)][i % 2]
}

/// Whether every x is a whole number (epochs: ticks then fall on whole numbers only), and
/// how many ticks a range of `span` gets.
fn x_ticks(series: &[Series], span: f64) -> (bool, usize) {
    let whole = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .all(|&(x, _)| x.fract() == 0.0);
    (
        whole,
        if whole {
            (span as usize + 1).min(11)
        } else {
            10
        },
    )
}

/// The x and y ranges of a line chart: every point and marker, y padded so that the range
/// is never empty (a pad that survives rounding at the values' magnitude).
fn bounds(series: &[Series], markers: impl Iterator<Item = f64>) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in series.iter().flat_map(|(_, p)| p.iter()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    for x in markers {
        (x0, x1) = (x0.min(x), x1.max(x));
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6 * y0.abs().max(y1.abs()).max(1.0));
    let x1 = x1.max(x0 + 1e-6 * x0.abs().max(1.0));
    (x0, x1, y0 - pad, y1 + pad)
}

/// Line chart of several series, with vertical marker lines; the legend sits beside it.
fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    markers: &[(f64, String)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    // Callers drop undrawable points with `drawable`; this keeps the figure safe anyway.
    let (series, _) = drawable(series.to_vec());
    let series: Vec<Series> = series.into_iter().map(|(n, p)| (n, thin(&p))).collect();
    let markers: Vec<&(f64, String)> = markers.iter().filter(|(x, _)| drawable_value(*x)).collect();
    let (x0, x1, y0, y1) = bounds(&series, markers.iter().map(|(x, _)| *x));
    let (plot, key) = beside_legend(area);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| anyhow!("{e}"))?;
    // Whole-number x values (epochs) get whole-number ticks only.
    let (whole, ticks) = x_ticks(&series, x1 - x0);
    let x_tick = |x: &f64| match (whole, x.fract() == 0.0) {
        (true, true) => format!("{x:.0}"),
        (true, false) => String::new(),
        (false, _) => format!("{x}"),
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(ticks)
        .x_label_formatter(&x_tick)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let mut entries = Vec::new();
    for (i, (name, p)) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(p.iter().map(|&(x, y)| Circle::new((x, y), 3, c.filled())))
            .map_err(|e| anyhow!("{e}"))?;
        entries.push((name.clone(), Key::Line));
    }
    for (i, (x, name)) in markers.into_iter().enumerate() {
        let line =
            DashedLineSeries::new([(*x, y0), (*x, y1)], 6, 4, marker_colour(i).stroke_width(2));
        chart.draw_series(line).map_err(|e| anyhow!("{e}"))?;
        entries.push((name.clone(), Key::Marker));
    }
    legend(&key, &entries)
}

/// Grouped bar chart: `values[g][s]` is series `s` in group `g`.
fn grouped_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[String],
    values: &[Vec<f64>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let value = |v: f64| if drawable_value(v) { v.max(0.0) } else { 0.0 };
    let y1 = values
        .iter()
        .flatten()
        .map(|&v| value(v))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let n = groups.len().max(1);
    let s = series.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..y1)
        .map_err(|e| anyhow!("{e}"))?;
    let names = groups.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&move |x| category(&names, *x))
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let width = 0.8 / s as f64;
    for si in 0..series.len() {
        let c = colour(si);
        chart
            .draw_series(values.iter().enumerate().map(|(g, row)| {
                let x = g as f64 - 0.4 + si as f64 * width;
                Rectangle::new(
                    [
                        (x, 0.0),
                        (x + width * 0.9, value(row.get(si).copied().unwrap_or(0.0))),
                    ],
                    c.filled(),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

/// The values a heatmap shows (undrawable ones as no data) and their largest magnitude.
fn heat_values(values: &[Vec<Option<f64>>]) -> (Vec<Vec<Option<f64>>>, f64) {
    let values: Vec<Vec<Option<f64>>> = values
        .iter()
        .map(|r| r.iter().map(|v| v.filter(|&v| drawable_value(v))).collect())
        .collect();
    let max = values
        .iter()
        .flatten()
        .flatten()
        .fold(1e-12f64, |m, v| m.max(v.abs()));
    (values, max)
}

/// Blue for negative, red for positive values, white near zero, grey for no data.
fn heat_colour(v: Option<f64>, max: f64) -> RGBColor {
    let Some(v) = v else {
        return RGBColor(220, 220, 220);
    };
    let t = (v.abs() / max).min(1.0);
    let fade = (255.0 * (1.0 - t)) as u8;
    if v >= 0.0 {
        RGBColor(255, fade, fade)
    } else {
        RGBColor(fade, fade, 255)
    }
}

/// Heatmap of `values[row][col]` (None = no data), rows labelled on the left.
fn heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f64>>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (values, max) = heat_values(values);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(
            -0.5f64..cols.len() as f64 - 0.5,
            -0.5f64..rows.len() as f64 - 0.5,
        )
        .map_err(|e| anyhow!("{e}"))?;
    let nrows = rows.len();
    let cn = cols.to_vec();
    // Rows are drawn top to bottom.
    let rn: Vec<String> = rows.iter().rev().cloned().collect();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(cols.len() + 1)
        .y_labels(rows.len() + 1)
        .x_label_formatter(&move |x| category(&cn, *x))
        .y_label_formatter(&move |y| category(&rn, *y))
        .x_desc("target activation")
        .y_desc("source activation")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (r, row) in values.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let y = (nrows - 1 - r) as f64;
            let fill = heat_colour(*v, max);
            let (x0, y0) = (c as f64 - 0.5, y - 0.5);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                    fill.filled(),
                )))
                .map_err(|e| anyhow!("{e}"))?;
            let text = v.map_or("n/a".to_string(), |v| format!("{v:+.4}"));
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (c as f64 - 0.3, y + 0.05),
                    ("sans-serif", 14),
                )))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(())
}
