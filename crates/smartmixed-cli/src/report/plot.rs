//! Figures with plotters, each rendered in memory as SVG and PNG (text drawn with the
//! bundled DejaVu Sans, so PNGs render the same on machines without system fonts), their
//! pixel size and point counts bounded. The constructors at the end (`loss`,
//! `final_shares`, `shares_over_epochs`, `mrr`, `rank_counts`, `weights`) build the
//! report's Figs. 1-6, so that titles, scales and colours are chosen in one place.

use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use smartmixed_core::Phase;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (900, 560);
/// The most panels a grid draws (callers pool layers into at most this many bands).
pub const MAX_PANELS: usize = 24;
/// The largest figure in pixels: a grid of [`MAX_PANELS`] panels, three to a row.
const MAX_SIZE: (u32, u32) = (3 * 600, 8 * 380);
/// The most points a line series draws; longer series are thinned evenly (the last point
/// kept), so that an SVG's size stays bounded however many epochs a run has.
const MAX_POINTS: usize = 1000;
/// A loss series is drawn on a log scale when its largest value is more than this many
/// times its smallest (a linear axis would flatten everything after the first epochs).
const LOG_SPAN: f64 = 10.0;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid; registration only fails on unparsable bytes.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A colour per series, stable across figures (an activation has the same colour in
/// Fig. 3 and in every panel of Fig. 3b).
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

/// SmartMixed's bar where methods are compared (Fig. 4); the other methods are grey.
pub const SMARTMIXED_COLOUR: RGBColor = RGBColor(214, 39, 40);
const OTHER_METHOD_COLOUR: RGBColor = RGBColor(150, 150, 150);

/// The `i`-th of `n` colours from dark to light (ranks 1..n in Fig. 5: darker is better).
fn sequential(i: usize, n: usize) -> RGBColor {
    let t = if n > 1 {
        i as f64 / (n - 1) as f64
    } else {
        0.0
    };
    // From dark blue to light blue.
    let mix = |a: u8, b: u8| (a as f64 + t * (b as f64 - a as f64)).round() as u8;
    RGBColor(mix(8, 198), mix(48, 219), mix(107, 239))
}

/// What a vertical marker line marks; each kind has one colour in every figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    /// The epoch whose checkpoint `training.select` kept.
    Selected,
    /// Where phase 1 handed over to phase 2 (the automatic transition) or a phase
    /// stopped early.
    Ended,
}

impl MarkerKind {
    fn colour(self) -> RGBColor {
        match self {
            MarkerKind::Selected => RGBColor(0, 0, 0),
            MarkerKind::Ended => RGBColor(102, 102, 153),
        }
    }
}

/// A vertical line at `x`, named in the legend.
#[derive(Clone, Debug)]
pub struct Marker {
    pub x: f64,
    pub kind: MarkerKind,
    pub label: String,
}

/// Series of (x, y) points with a name.
pub type Series = (String, Vec<(f64, f64)>);

/// A line chart: series over epochs, vertical markers, and a note under the chart.
#[derive(Clone, Default)]
pub struct Lines {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// One line under the chart: what a reader must know to read it.
    pub note: Option<String>,
    /// A log y axis when the values span more than [`LOG_SPAN`] (losses; shares and
    /// other bounded values stay linear).
    pub log_when_wide: bool,
    /// The y axis starts at zero (shares: a line's height is its share, not a difference).
    pub from_zero: bool,
}

/// The spread of one bar's value over seeds: its standard deviation (the error bar) and
/// each seed's value (drawn as dots).
#[derive(Clone, Debug, Default)]
pub struct Spread {
    pub sd: f64,
    pub points: Vec<f64>,
}

/// A grouped bar chart: `values[g][s]` is series `s` in group `g`.
#[derive(Clone, Default)]
pub struct Bars {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub groups: Vec<String>,
    pub series: Vec<String>,
    pub values: Vec<Vec<f64>>,
    /// The values are counts: ticks on whole numbers only.
    pub whole: bool,
    /// With one series: this group's bar in [`SMARTMIXED_COLOUR`], the others grey.
    pub highlight: Option<usize>,
    /// Print each bar's value above it.
    pub labels: bool,
    /// With one series, per group: the spread over seeds (empty: none).
    pub spread: Vec<Spread>,
    /// Series coloured dark to light (ranks), not by the categorical palette.
    pub sequential: bool,
}

/// `values[row][col]` (None = no data) with the number of values behind each cell.
#[derive(Clone, Default)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
    pub counts: Vec<Vec<u64>>,
}

/// A figure, drawable on any plotters backend.
pub enum Figure {
    Lines(Lines),
    Bars(Bars),
    Heatmap(Heatmap),
    /// Line-chart panels in a grid of `columns` under one title, with one legend (the
    /// first panel's) beside the grid.
    Grid {
        title: String,
        columns: usize,
        panels: Vec<Lines>,
    },
}

type Drawn = Result<()>;

fn plot_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("{e}")
}

impl Figure {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        match self {
            Figure::Lines(l) => {
                let plot = with_note(area, l.note.as_deref())?;
                let (plot, key) = beside_legend(&plot);
                let entries = lines(&plot, l)?;
                legend(&key, &entries)
            }
            Figure::Bars(b) => bars(area, b),
            Figure::Heatmap(h) => heatmap(area, h),
            Figure::Grid {
                title,
                columns,
                panels,
            } => {
                let area = area.titled(title, ("sans-serif", 22)).map_err(plot_err)?;
                let (grid, key) = beside_legend(&area);
                let (cols, rows) = grid_shape(*columns, panels.len());
                let mut entries = Vec::new();
                for (i, (panel, sub)) in panels
                    .iter()
                    .zip(grid.split_evenly((rows, cols)))
                    .enumerate()
                {
                    let drawn = lines(&sub, panel)?;
                    if i == 0 {
                        entries = drawn;
                    }
                }
                legend(&key, &entries)
            }
        }
    }

    /// Pixel size: grids grow with their panels, up to [`MAX_SIZE`].
    fn size(&self) -> (u32, u32) {
        match self {
            Figure::Grid {
                columns, panels, ..
            } => {
                let (cols, rows) = grid_shape(*columns, panels.len());
                (
                    (cols as u32 * 600 + LEGEND_WIDTH).min(MAX_SIZE.0),
                    (rows as u32 * 380 + 40).min(MAX_SIZE.1),
                )
            }
            // Wide enough for every group's tick label (Table II's 18 architectures, Fig. 3's
            // up to 24 bands of layers).
            Figure::Bars(b) => (
                (200 + 70 * b.groups.len() as u32).clamp(SIZE.0, MAX_SIZE.0),
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
/// Height of the note under a chart.
const NOTE_HEIGHT: u32 = 26;

/// The chart's area and, to its right, the legend's.
fn beside_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
) -> (DrawingArea<DB, Shift>, DrawingArea<DB, Shift>) {
    let (w, _) = area.dim_in_pixel();
    area.split_horizontally(w.saturating_sub(LEGEND_WIDTH))
}

/// The area above `note`, which is written under it.
fn with_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    note: Option<&str>,
) -> Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let Some(note) = note else {
        return Ok(area.clone());
    };
    let (_, h) = area.dim_in_pixel();
    let (plot, strip) = area.split_vertically(h.saturating_sub(NOTE_HEIGHT));
    let style = ("sans-serif", 14).into_font().color(&RGBColor(70, 70, 70));
    strip
        .draw(&Text::new(note.to_string(), (16, 2), style))
        .map_err(plot_err)?;
    Ok(plot)
}

/// How a legend entry is drawn: a line, a dashed marker line or a filled box.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Key {
    Line,
    Marker,
    Box,
}

/// A legend entry: its name, how it is drawn, its colour.
type Entry = (String, Key, RGBColor);

/// Legend entries, top to bottom.
fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[Entry]) -> Drawn
where
    DB::ErrorType: 'static,
{
    for (row, (name, key, c)) in entries.iter().enumerate() {
        let y = 60 + 24 * row as i32;
        let c = *c;
        match key {
            Key::Line => area
                .draw(&PathElement::new(vec![(6, y), (28, y)], c.stroke_width(2)))
                .map_err(plot_err)?,
            Key::Marker => {
                for x in [6, 15, 24] {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 5, y)],
                        c.stroke_width(2),
                    ))
                    .map_err(plot_err)?
                }
            }
            Key::Box => area
                .draw(&Rectangle::new([(8, y - 6), (24, y + 6)], c.filled()))
                .map_err(plot_err)?,
        }
        area.draw(&Text::new(name.clone(), (34, y - 8), ("sans-serif", 14)))
            .map_err(plot_err)?;
    }
    Ok(())
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
/// is never empty (a pad that survives rounding at the values' magnitude), x padded so
/// that a marker at the first or last epoch stands clear of the frame.
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
    let x_pad = ((x1 - x0) * 0.03).max(if x0.fract() == 0.0 { 0.4 } else { 0.0 });
    (x0 - x_pad, x1 + x_pad, y0 - pad, y1 + pad)
}

/// Whether a line chart's y axis is logarithmic: every value positive and the largest more
/// than [`LOG_SPAN`] times the smallest.
fn log_scale(series: &[Series]) -> bool {
    let ys = || series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let lo = ys().fold(f64::INFINITY, f64::min);
    let hi = ys().fold(f64::NEG_INFINITY, f64::max);
    lo > 0.0 && hi / lo > LOG_SPAN
}

/// How many y labels plotters is asked for on a linear axis.
const Y_LABELS: usize = 10;

/// The fewest decimals (at most 6) that write every tick exactly; `None` when six do not
/// (ticks then written in scientific notation).
fn decimals(ticks: &[f64]) -> Option<usize> {
    (0..=6).find(|&d| {
        ticks.iter().all(|&t| {
            format!("{t:.d$}")
                .parse::<f64>()
                .is_ok_and(|p| (p - t).abs() <= 1e-9 * t.abs().max(1e-300))
        })
    })
}

/// A tick label with `decimals` (or in scientific notation).
fn tick_label(v: f64, decimals: Option<usize>) -> String {
    match decimals {
        Some(d) => format!("{v:.d$}"),
        None => format!("{v:.1e}"),
    }
}

/// A log axis's ticks within `lo..=hi` (positive): labelled ones at 1, 2 and 5 times a
/// power of ten (beyond four decades only the powers themselves, at most about eight of
/// them) and grid lines at the other whole multiples.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let labelled: &[f64] = if last - first > 4 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let every = ((last - first) as u32).div_ceil(8).max(1) as i32;
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    for k in first..=last {
        let power = 10f64.powi(k);
        for m in 1..10 {
            // Written as a decimal literal would be (0.2, not 0.20000000000000001).
            let v: f64 = format!("{m}e{k}").parse().unwrap_or(m as f64 * power);
            if v < lo || v > hi {
                continue;
            }
            if labelled.contains(&(m as f64)) && (k - first) % every == 0 {
                bold.push(v);
            } else {
                light.push(v);
            }
        }
    }
    (bold, light)
}

/// Pixels of a y label area: the widest tick label (about 9 px a character at 14 px) plus
/// the rotated axis name and the gaps, so that the two never overlap.
fn y_area_width(labels: &[String]) -> u32 {
    let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as u32;
    9 * chars + 44
}

/// A y axis: its range and scale and the labels of its ticks.
struct YAxis {
    lo: f64,
    hi: f64,
    log: bool,
    /// A log axis's labelled ticks and other grid lines.
    log_ticks: (Vec<f64>, Vec<f64>),
    decimals: Option<usize>,
    width: u32,
}

impl YAxis {
    /// A linear axis over `lo..hi`, or a log one (padded by a factor) when `log`.
    fn new(lo: f64, hi: f64, log: bool) -> Self {
        let (lo, hi) = if log {
            let (a, b) = (lo.max(f64::MIN_POSITIVE), hi.max(f64::MIN_POSITIVE));
            (a / 1.15, b * 1.15)
        } else {
            (lo, hi)
        };
        let log_ticks = if log {
            log_ticks(lo, hi)
        } else {
            Default::default()
        };
        let ticks: Vec<f64> = if log {
            log_ticks.0.clone()
        } else {
            RangedCoordf64::from(lo..hi).key_points(Y_LABELS)
        };
        let decimals = decimals(&ticks);
        let mut axis = YAxis {
            lo,
            hi,
            log,
            log_ticks,
            decimals,
            width: 0,
        };
        let labels: Vec<String> = ticks.iter().map(|&t| axis.label(t)).collect();
        axis.width = y_area_width(&labels);
        axis
    }

    fn label(&self, v: f64) -> String {
        if self.log {
            tick_label(v, decimals(&[v]))
        } else {
            tick_label(v, self.decimals)
        }
    }
}

/// Line chart of several series, with vertical marker lines; returns its legend entries.
fn lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, l: &Lines) -> Result<Vec<Entry>>
where
    DB::ErrorType: 'static,
{
    // Callers drop undrawable points with `drawable`; this keeps the figure safe anyway.
    let (series, _) = drawable(l.series.clone());
    let series: Vec<Series> = series.into_iter().map(|(n, p)| (n, thin(&p))).collect();
    let markers: Vec<&Marker> = l.markers.iter().filter(|m| drawable_value(m.x)).collect();
    let (x0, x1, y0, y1) = bounds(&series, markers.iter().map(|m| m.x));
    let y0 = if l.from_zero { y0.min(0.0) } else { y0 };
    let log = l.log_when_wide && log_scale(&series);
    let axis = if log {
        let ys = || series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
        YAxis::new(
            ys().fold(f64::INFINITY, f64::min),
            ys().fold(f64::NEG_INFINITY, f64::max),
            true,
        )
    } else {
        YAxis::new(y0, y1, false)
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&l.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(axis.width);
    if axis.log {
        let chart = builder
            .build_cartesian_2d(
                x0..x1,
                (axis.lo..axis.hi)
                    .log_scale()
                    .with_key_points(axis.log_ticks.0.clone())
                    .with_light_points(axis.log_ticks.1.clone()),
            )
            .map_err(plot_err)?;
        draw_lines(chart, l, &series, &markers, &axis, Y_LABELS)
    } else {
        let chart = builder
            .build_cartesian_2d(x0..x1, axis.lo..axis.hi)
            .map_err(plot_err)?;
        draw_lines(chart, l, &series, &markers, &axis, Y_LABELS)
    }
}

/// The mesh, series and markers of [`lines`] on a chart of either y scale.
fn draw_lines<DB, Y>(
    mut chart: ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>,
    l: &Lines,
    series: &[Series],
    markers: &[&Marker],
    axis: &YAxis,
    y_labels: usize,
) -> Result<Vec<Entry>>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (x0, x1) = {
        let r = chart.x_range();
        (r.start, r.end)
    };
    // Whole-number x values (epochs) get whole-number ticks only.
    let (whole, ticks) = x_ticks(series, x1 - x0);
    let x_tick = |x: &f64| match (whole, x.fract() == 0.0) {
        (true, true) => format!("{x:.0}"),
        (true, false) => String::new(),
        (false, _) => format!("{x}"),
    };
    let y_tick = |y: &f64| axis.label(*y);
    chart
        .configure_mesh()
        .x_desc(&l.x_label)
        .y_desc(&l.y_label)
        .x_labels(ticks)
        .y_labels(y_labels)
        .x_label_formatter(&x_tick)
        .y_label_formatter(&y_tick)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(0, 0, 0).mix(0.04))
        .draw()
        .map_err(plot_err)?;
    let mut entries = Vec::new();
    for (i, (name, p)) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
            .map_err(plot_err)?;
        chart
            .draw_series(p.iter().map(|&(x, y)| Circle::new((x, y), 3, c.filled())))
            .map_err(plot_err)?;
        entries.push((name.clone(), Key::Line, c));
    }
    for m in markers {
        let c = m.kind.colour();
        let line = DashedLineSeries::new([(m.x, axis.lo), (m.x, axis.hi)], 6, 4, c.stroke_width(2));
        chart.draw_series(line).map_err(plot_err)?;
        entries.push((m.label.clone(), Key::Marker, c));
    }
    Ok(entries)
}

/// The top of a bar chart's y range: room above the tallest bar, error bar or dot (and
/// its printed value); counts end on a whole number.
fn bars_top(b: &Bars) -> f64 {
    let value = |v: f64| if drawable_value(v) { v.max(0.0) } else { 0.0 };
    let mut max = values_max(b.values.iter().flatten().map(|&v| value(v)));
    for (row, s) in b.values.iter().zip(&b.spread) {
        let mean = row.first().copied().map_or(0.0, value);
        max = max.max(value(mean + s.sd));
        max = max.max(values_max(s.points.iter().map(|&v| value(v))));
    }
    if b.whole {
        return max.ceil() + 1.0;
    }
    max.max(1e-9) * if b.labels { 1.15 } else { 1.08 }
}

fn values_max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

/// Grouped bar chart, with a legend beside it when there are several series.
fn bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, b: &Bars) -> Drawn
where
    DB::ErrorType: 'static,
{
    let s = b.series.len().max(1);
    let series_colour = |si: usize| {
        if b.sequential {
            sequential(si, s)
        } else {
            colour(si)
        }
    };
    let plot = if b.series.len() > 1 {
        let (plot, key) = beside_legend(area);
        let entries: Vec<Entry> = b
            .series
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), Key::Box, series_colour(i)))
            .collect();
        legend(&key, &entries)?;
        plot
    } else {
        area.clone()
    };
    let value = |v: f64| if drawable_value(v) { v.max(0.0) } else { 0.0 };
    let top = bars_top(b);
    let n = b.groups.len().max(1);
    let axis_labels = if b.whole {
        (top as usize + 1).min(Y_LABELS + 1)
    } else {
        Y_LABELS
    };
    let ticks = RangedCoordf64::from(0.0..top).key_points(axis_labels);
    let decimals = if b.whole { Some(0) } else { decimals(&ticks) };
    let y_tick = move |y: &f64| {
        if b.whole && y.fract() != 0.0 {
            String::new()
        } else {
            tick_label(*y, decimals)
        }
    };
    let width: Vec<String> = ticks.iter().map(y_tick).collect();
    let mut chart = ChartBuilder::on(&plot)
        .caption(&b.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(if b.x_label.is_empty() { 30 } else { 50 })
        .y_label_area_size(y_area_width(&width))
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..top)
        .map_err(plot_err)?;
    let names = b.groups.clone();
    let x_tick = move |x: &f64| category(&names, *x);
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .x_labels(n + 1)
        .y_labels(axis_labels)
        .x_label_formatter(&x_tick)
        .y_label_formatter(&y_tick)
        .y_desc(&b.y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(0, 0, 0).mix(0.04));
    if !b.x_label.is_empty() {
        mesh.x_desc(&b.x_label);
    }
    mesh.draw().map_err(plot_err)?;
    let width = 0.8 / s as f64;
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for si in 0..b.series.len() {
        for (g, row) in b.values.iter().enumerate() {
            let c = match b.highlight {
                Some(h) if b.series.len() == 1 => {
                    if g == h {
                        SMARTMIXED_COLOUR
                    } else {
                        OTHER_METHOD_COLOUR
                    }
                }
                _ => series_colour(si),
            };
            let x = g as f64 - 0.4 + si as f64 * width;
            let v = value(row.get(si).copied().unwrap_or(0.0));
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, 0.0), (x + width * 0.9, v)],
                    c.filled(),
                )))
                .map_err(plot_err)?;
            let centre = x + width * 0.45;
            let spread = b.spread.get(g).filter(|_| b.series.len() == 1);
            let mut label_at = v;
            if let Some(sp) = spread {
                let (lo, hi) = ((v - sp.sd).max(0.0), v + sp.sd);
                let black = BLACK.stroke_width(2);
                let cap = width * 0.12;
                for seg in [
                    [(centre, lo), (centre, hi)],
                    [(centre - cap, lo), (centre + cap, lo)],
                    [(centre - cap, hi), (centre + cap, hi)],
                ] {
                    chart
                        .draw_series(std::iter::once(PathElement::new(seg.to_vec(), black)))
                        .map_err(plot_err)?;
                }
                chart
                    .draw_series(
                        sp.points.iter().filter(|p| drawable_value(**p)).map(|&p| {
                            Circle::new((centre + cap * 1.8, p.max(0.0)), 3, BLACK.filled())
                        }),
                    )
                    .map_err(plot_err)?;
                label_at = values_max(sp.points.iter().copied()).max(hi);
            }
            if b.labels {
                let text = match spread {
                    Some(sp) => format!("{v:.3} ± {:.3}", sp.sd),
                    None if b.whole => format!("{v:.0}"),
                    None => format!("{v:.3}"),
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (centre, label_at + 0.015 * top),
                        label_style.clone(),
                    )))
                    .map_err(plot_err)?;
            }
        }
    }
    Ok(())
}

/// Cells of a heatmap with a value.
fn heat_cells(values: &[Vec<Option<f64>>]) -> Vec<f64> {
    values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|&v| drawable_value(v))
        .collect()
}

/// The magnitude at which the colour scale saturates: the 90th percentile of the cells'
/// magnitudes (nearest rank), so that one extreme cell (a pair of rare activations, a
/// handful of weights) does not wash out every other cell; cells beyond it get the full
/// colour and the colour bar says so.
fn heat_scale(values: &[Vec<Option<f64>>]) -> f64 {
    let mut m: Vec<f64> = heat_cells(values).iter().map(|v| v.abs()).collect();
    if m.is_empty() {
        return 1.0;
    }
    m.sort_by(f64::total_cmp);
    let rank = (0.9 * m.len() as f64).ceil() as usize;
    m[rank.clamp(1, m.len()) - 1].max(1e-12)
}

/// Blue for negative, red for positive values, white near zero, grey for no data; `t` in
/// 0..=1 is the fraction of the scale (saturated at 1).
fn heat_colour(v: Option<f64>, scale: f64) -> (RGBColor, f64) {
    let Some(v) = v else {
        return (RGBColor(220, 220, 220), 0.0);
    };
    let t = (v.abs() / scale).min(1.0);
    // From white to a strong but not black red or blue.
    let mix = |to: u8| (255.0 - t * (255.0 - to as f64)) as u8;
    let c = if v >= 0.0 {
        RGBColor(mix(178), mix(24), mix(43))
    } else {
        RGBColor(mix(33), mix(102), mix(172))
    };
    (c, t)
}

/// Width of a heatmap's colour bar column.
const COLOUR_BAR_WIDTH: u32 = 150;

/// Heatmap of `values[row][col]` (None = no data), rows labelled on the left, each cell
/// with its value and count; a colour bar on the right.
fn heatmap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &Heatmap) -> Drawn
where
    DB::ErrorType: 'static,
{
    let values: Vec<Vec<Option<f64>>> = h
        .values
        .iter()
        .map(|r| r.iter().map(|v| v.filter(|&v| drawable_value(v))).collect())
        .collect();
    let scale = heat_scale(&values);
    let (w, _) = area.dim_in_pixel();
    let (plot, bar) = area.split_horizontally(w.saturating_sub(COLOUR_BAR_WIDTH));
    let label_width = h.rows.iter().map(|r| r.chars().count()).max().unwrap_or(1) as u32;
    let mut chart = ChartBuilder::on(&plot)
        .caption(&h.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(9 * label_width + 44)
        .build_cartesian_2d(
            -0.5f64..h.cols.len() as f64 - 0.5,
            -0.5f64..h.rows.len() as f64 - 0.5,
        )
        .map_err(plot_err)?;
    let nrows = h.rows.len();
    let cn = h.cols.clone();
    // Rows are drawn top to bottom.
    let rn: Vec<String> = h.rows.iter().rev().cloned().collect();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(h.cols.len() + 1)
        .y_labels(h.rows.len() + 1)
        .x_label_formatter(&move |x| category(&cn, *x))
        .y_label_formatter(&move |y| category(&rn, *y))
        .x_desc("target activation (receiving neurons)")
        .y_desc("source activation (sending neurons)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    let centred = |size: u32, c: &'static RGBColor| {
        TextStyle::from(("sans-serif", size).into_font())
            .pos(Pos::new(HPos::Center, VPos::Center))
            .color(c)
    };
    for (r, row) in values.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let y = (nrows - 1 - r) as f64;
            let (fill, t) = heat_colour(*v, scale);
            let (x0, y0) = (c as f64 - 0.5, y - 0.5);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                    fill.filled(),
                )))
                .map_err(plot_err)?;
            let ink: &'static RGBColor = if t > 0.6 { &WHITE } else { &BLACK };
            let text = v.map_or("n/a".to_string(), |v| format!("{v:+.4}"));
            let count = h
                .counts
                .get(r)
                .and_then(|row| row.get(c))
                .copied()
                .unwrap_or(0);
            chart
                .draw_series([
                    Text::new(text, (c as f64, y + 0.12), centred(15, ink)),
                    Text::new(
                        format!("n = {count}"),
                        (c as f64, y - 0.18),
                        centred(12, ink),
                    ),
                ])
                .map_err(plot_err)?;
        }
    }
    colour_bar(
        &bar,
        scale,
        heat_cells(&values).iter().any(|v| v.abs() > scale),
    )
}

/// The heatmap's colour scale from `-scale` to `+scale`, noting when cells beyond it were
/// drawn in the end colours.
fn colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scale: f64, clipped: bool) -> Drawn
where
    DB::ErrorType: 'static,
{
    let ticks = RangedCoordf64::from(-scale..scale).key_points(6);
    let decimals = decimals(&ticks);
    let y_tick = |y: &f64| tick_label(*y, decimals);
    let labels: Vec<String> = ticks.iter().map(y_tick).collect();
    let desc = if clipped {
        format!("mean weight (|w| > {scale:.3} in full colour)")
    } else {
        "mean weight".to_string()
    };
    let mut chart = ChartBuilder::on(area)
        .margin_top(60)
        .margin_bottom(66)
        .margin_right(12)
        .y_label_area_size(y_area_width(&labels))
        .build_cartesian_2d(0f64..1f64, -scale..scale)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&y_tick)
        .y_desc(&desc)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    let steps = 100;
    chart
        .draw_series((0..steps).map(|i| {
            let a = -scale + 2.0 * scale * i as f64 / steps as f64;
            let b = -scale + 2.0 * scale * (i + 1) as f64 / steps as f64;
            let (c, _) = heat_colour(Some((a + b) / 2.0), scale);
            Rectangle::new([(0.0, a), (1.0, b)], c.filled())
        }))
        .map_err(plot_err)?;
    Ok(())
}

// ---- The report's figures ----

/// Figs. 1-2: a phase's train and validation loss with its markers. Phase 1's train loss
/// is measured on sampled activations and its validation loss on the argmax choices, so
/// its figure says that the two curves do not measure the same network.
pub fn loss(phase: Phase, series: Vec<Series>, markers: Vec<Marker>) -> Figure {
    let (title, note) = match phase {
        Phase::Phase1 => (
            "Training and validation loss, phase 1 (selective)",
            Some("Train loss: activations sampled with Gumbel noise; validation loss: argmax choices. The two are not directly comparable."),
        ),
        Phase::Phase2 => ("Training and validation loss, phase 2 (mixed network)", None),
        Phase::Fixed => ("Training and validation loss, fixed activation", None),
    };
    Figure::Lines(Lines {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: "cross-entropy loss".into(),
        series,
        markers,
        note: note.map(Into::into),
        log_when_wide: true,
        from_zero: false,
    })
}

/// Fig. 3: the share of each activation per hidden layer (or band of layers) in the
/// checkpoint phase 1 handed over, the one of its selected epoch.
pub fn final_shares(
    groups: Vec<String>,
    pool: &[String],
    values: Vec<Vec<f64>>,
    selected: Option<usize>,
) -> Figure {
    let epoch = selected.map_or(String::new(), |e| format!(" (epoch {e})"));
    Figure::Bars(Bars {
        title: format!("Activation shares per hidden layer at the selected phase-1 epoch{epoch}"),
        x_label: "hidden layer (neurons)".into(),
        y_label: "% of neurons in the layer".into(),
        groups,
        series: pool.to_vec(),
        values,
        ..Bars::default()
    })
}

/// Fig. 3b: per hidden layer (or band), each activation's share over the phase-1 epochs,
/// the selected epoch and the transition marked in every panel.
pub fn shares_over_epochs(panels: Vec<(String, Vec<Series>)>, markers: Vec<Marker>) -> Figure {
    let columns = panels.len().clamp(1, 3);
    Figure::Grid {
        title: "Activation shares per hidden layer over the phase-1 epochs".into(),
        columns,
        panels: panels
            .into_iter()
            .map(|(title, series)| Lines {
                title,
                x_label: "phase-1 epoch".into(),
                y_label: "% of neurons".into(),
                series,
                markers: markers.clone(),
                note: None,
                log_when_wide: false,
                from_zero: true,
            })
            .collect(),
    }
}

/// Fig. 4: MRR per method, SmartMixed (`highlight`) in colour, values printed. With several
/// seeds (`per_seed[s][m]`), each bar is the mean of the per-seed MRRs with ± one standard
/// deviation and each seed's MRR as a dot; otherwise the bar is `mrr`.
pub fn mrr(
    methods: &[String],
    mrr: &[(String, f64)],
    per_seed: &[Vec<(String, f64)>],
    highlight: &str,
    architectures: usize,
) -> Figure {
    let several = per_seed.len() > 1;
    let (values, spread): (Vec<Vec<f64>>, Vec<Spread>) = if several {
        (0..methods.len())
            .map(|m| {
                let points: Vec<f64> = per_seed.iter().map(|p| p[m].1).collect();
                let (mean, sd) = super::ranking::mean_std(&points);
                (vec![mean], Spread { sd, points })
            })
            .unzip()
    } else {
        (mrr.iter().map(|(_, v)| vec![*v]).collect(), Vec::new())
    };
    Figure::Bars(Bars {
        title: if several {
            format!(
                "Mean Reciprocal Rank over {architectures} architectures: mean ± sd over {} seeds",
                per_seed.len()
            )
        } else {
            format!("Mean Reciprocal Rank over {architectures} architectures")
        },
        x_label: "method".into(),
        y_label: "MRR (1 = first everywhere)".into(),
        groups: methods.to_vec(),
        series: vec!["MRR".into()],
        values,
        highlight: methods.iter().position(|m| m == highlight),
        labels: true,
        spread,
        ..Bars::default()
    })
}

/// Fig. 5: how often each method took each rank, for the ranks that can occur: 1 up to
/// the most methods ranked in one architecture (`max_rank`).
pub fn rank_counts(methods: &[String], counts: &[Vec<usize>], max_rank: usize) -> Figure {
    let ranks = max_rank.min(counts.iter().map(Vec::len).max().unwrap_or(0));
    Figure::Bars(Bars {
        title: "How often each method took each rank".into(),
        x_label: "method".into(),
        y_label: "architectures".into(),
        groups: methods.to_vec(),
        series: (1..=ranks).map(|r| format!("rank {r}")).collect(),
        values: counts
            .iter()
            .map(|c| c.iter().take(ranks).map(|&v| v as f64).collect())
            .collect(),
        whole: true,
        sequential: true,
        ..Bars::default()
    })
}

/// Fig. 6: the mean hidden-to-hidden weight between activation groups over `cells`
/// SmartMixed cells, with the number of weights behind each cell.
pub fn weights(
    pool: &[String],
    values: Vec<Vec<Option<f64>>>,
    counts: Vec<Vec<u64>>,
    cells: usize,
) -> Figure {
    Figure::Heatmap(Heatmap {
        title: format!(
            "Mean weight between activation groups ({cells} SmartMixed {})",
            if cells == 1 { "cell" } else { "cells" }
        ),
        rows: pool.to_vec(),
        cols: pool.to_vec(),
        values,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(ys: &[f64]) -> Series {
        (
            "s".into(),
            ys.iter()
                .enumerate()
                .map(|(i, &y)| (i as f64 + 1.0, y))
                .collect(),
        )
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The PNG decoded by the png crate: its width, height and RGB pixels.
    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(png_bytes).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// The SVG's text elements, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                Some(
                    t.split_once('>')?
                        .1
                        .split_once("</text>")?
                        .0
                        .trim()
                        .to_string(),
                )
            })
            .collect()
    }

    fn has_colour(rgb: &[u8], c: RGBColor) -> bool {
        rgb.chunks(3).any(|p| p == [c.0, c.1, c.2])
    }

    #[test]
    fn log_scale_only_when_the_losses_span_more_than_a_decade() {
        assert!(log_scale(&[curve(&[2.3, 0.5, 0.2])])); // 11.5x
        assert!(!log_scale(&[curve(&[2.0, 0.5, 0.2])])); // exactly 10x
        assert!(!log_scale(&[curve(&[1.7, 0.3]), curve(&[0.9, 0.5])]));
        // Across series: train falls to 0.01 while validation stays near 0.3.
        assert!(log_scale(&[curve(&[0.5, 0.05, 0.01]), curve(&[0.4, 0.3])]));
        // A zero (or negative) value has no place on a log axis.
        assert!(!log_scale(&[curve(&[5.0, 0.0])]));
        // Losses may go logarithmic; activation shares (2% to 50%) never do.
        let Figure::Lines(l) = loss(Phase::Phase2, vec![], vec![]) else {
            panic!("not lines")
        };
        assert!(l.log_when_wide);
        let shares = vec![("p".to_string(), vec![curve(&[2.0, 50.0])])];
        let Figure::Grid { panels, .. } = shares_over_epochs(shares, vec![]) else {
            panic!("not a grid")
        };
        assert!(!panels[0].log_when_wide);
        // The log axis labels 1, 2 and 5 times powers of ten, the others are grid lines.
        let (bold, light) = log_ticks(0.015, 0.46);
        assert_eq!(bold, [0.02, 0.05, 0.1, 0.2]);
        assert_eq!(light, [0.03, 0.04, 0.06, 0.07, 0.08, 0.09, 0.3, 0.4]);
        let axis = YAxis::new(0.015, 0.46, true);
        assert!(axis.log && axis.lo < 0.015 && axis.hi > 0.46);
        assert_eq!(axis.label(0.05), "0.05");
        // Past four decades only the powers of ten are labelled.
        assert_eq!(log_ticks(0.5e-4, 2.0).0, [1e-4, 1e-3, 1e-2, 0.1, 1.0]);
        // And at most about eight of them however wide the range.
        let (bold, light) = log_ticks(1e-300, 1e12);
        assert!(bold.len() <= 9 && light.len() < 3000, "{bold:?}");
    }

    #[test]
    fn the_y_label_area_holds_the_widest_tick_label() {
        // Linear ticks of 0.0001..0.0009 need four decimals: 6 characters.
        let axis = YAxis::new(0.0001, 0.0009, false);
        assert_eq!(axis.decimals, Some(4));
        assert_eq!(axis.label(0.0005), "0.0005");
        assert_eq!(axis.width, 9 * 6 + 44);
        // Ticks 0, 10, ..., 80 need none.
        let axis = YAxis::new(0.0, 80.0, false);
        assert_eq!(axis.label(40.0), "40");
        assert_eq!(axis.width, 9 * 2 + 44);
    }

    #[test]
    fn a_marker_at_the_last_or_first_epoch_stands_clear_of_the_frame() {
        let s = [curve(&[1.0, 0.8, 0.6, 0.5])]; // epochs 1..=4
        let (x0, x1, _, _) = bounds(&s, [4.0, 1.0].into_iter());
        assert!(x0 <= 1.0 - 0.4 && x1 >= 4.0 + 0.4, "{x0} {x1}");
        // 400 epochs: 3% of the span, 12 epochs on either side.
        let long: Vec<f64> = (0..400).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let (x0, x1, _, _) = bounds(&[curve(&long)], [400.0].into_iter());
        assert!(x1 - 400.0 > 10.0 && 1.0 - x0 > 10.0, "{x0} {x1}");
    }

    #[test]
    fn rank_counts_show_only_the_ranks_that_can_occur_with_whole_ticks() {
        // Three methods, but no architecture ranked more than two of them.
        let counts = vec![vec![1, 1, 0], vec![1, 0, 0], vec![0, 1, 0]];
        let Figure::Bars(b) = rank_counts(&names(&["a", "b", "c"]), &counts, 2) else {
            panic!("not bars")
        };
        assert_eq!(b.series, names(&["rank 1", "rank 2"]));
        assert_eq!(
            b.values,
            vec![vec![1.0, 1.0], vec![1.0, 0.0], vec![0.0, 1.0]]
        );
        assert!(b.whole);
        // The counts' axis ends on a whole number above the tallest bar.
        assert_eq!(bars_top(&b), 2.0);
        // Dark to light: rank 1 darker than rank 2.
        let lum = |c: RGBColor| c.0 as u32 + c.1 as u32 + c.2 as u32;
        assert!(lum(sequential(0, 2)) < lum(sequential(1, 2)));
    }

    #[test]
    fn the_heatmap_scale_is_not_set_by_one_extreme_cell() {
        // Nine cells near 0.01-0.09 and one of 5.0: the scale is the 90th percentile
        // (the 9th of 10 magnitudes), so 5.0 saturates alone.
        let mut row: Vec<Option<f64>> = (1..=9).map(|i| Some(-0.01 * i as f64)).collect();
        row.push(Some(5.0));
        let values = vec![row, vec![None]];
        let s = heat_scale(&values);
        assert!((s - 0.09).abs() < 1e-12, "{s}");
        assert_eq!(heat_colour(Some(5.0), s).1, 1.0);
        assert!((heat_colour(Some(-0.045), s).1 - 0.5).abs() < 1e-12);
        // No data at all: any scale, grey cells.
        assert_eq!(heat_scale(&[vec![None]]), 1.0);
        assert_eq!(heat_colour(None, 1.0).0, RGBColor(220, 220, 220));
    }

    #[test]
    fn figures_say_what_they_show_in_words() {
        let series = vec![("train".to_string(), vec![(1.0, 2.0), (2.0, 0.1)])];
        let selected = Marker {
            x: 2.0,
            kind: MarkerKind::Selected,
            label: "selected (epoch 2)".into(),
        };
        let (svg, _) = loss(Phase::Phase1, series.clone(), vec![selected.clone()])
            .render()
            .unwrap();
        assert!(svg.contains("Training and validation loss, phase 1 (selective)"));
        assert!(svg.contains("not directly comparable"));
        assert!(svg.contains("selected (epoch 2)"));
        let (svg, _) = loss(Phase::Phase2, series.clone(), vec![])
            .render()
            .unwrap();
        assert!(svg.contains("phase 2 (mixed network)") && !svg.contains("comparable"));
        let fig = final_shares(
            names(&["1 (64)"]),
            &names(&["relu"]),
            vec![vec![100.0]],
            Some(7),
        );
        let (svg, _) = fig.render().unwrap();
        assert!(svg.contains("selected phase-1 epoch (epoch 7)") && svg.contains("1 (64)"));
        // Fig. 3b: one legend for all panels, and the selected epoch in each.
        let panel = |t: &str| {
            (
                t.to_string(),
                vec![("relu".to_string(), vec![(1.0, 50.0), (2.0, 60.0)])],
            )
        };
        let fig = shares_over_epochs(
            vec![panel("layer 1 (64)"), panel("layer 2 (32)")],
            vec![selected],
        );
        let (svg, _) = fig.render().unwrap();
        let t = texts(&svg);
        assert_eq!(
            t.iter().filter(|t| *t == "relu").count(),
            1,
            "one legend: {t:?}"
        );
        assert_eq!(t.iter().filter(|t| *t == "selected (epoch 2)").count(), 1);
        assert!(svg.contains("layer 2 (32)"));
        let values = vec![vec![Some(0.5)]];
        let (svg, _) = weights(&names(&["elu"]), values, vec![vec![12]], 3)
            .render()
            .unwrap();
        assert!(
            svg.contains("n = 12")
                && svg.contains("mean weight")
                && svg.contains("3 SmartMixed cells")
        );
    }

    #[test]
    fn markers_keep_their_colour_across_figures() {
        let marker = |kind| Marker {
            x: 2.0,
            kind,
            label: String::new(),
        };
        let series = vec![("train".to_string(), vec![(1.0, 1.0), (3.0, 0.5)])];
        let draw = |markers| {
            let (_, png) = loss(Phase::Phase2, series.clone(), markers)
                .render()
                .unwrap();
            decode(&png).2
        };
        let slate = MarkerKind::Ended.colour();
        // The 'ended' marker is slate whether it comes first or after the selected one.
        assert!(has_colour(&draw(vec![marker(MarkerKind::Ended)]), slate));
        assert!(has_colour(
            &draw(vec![
                marker(MarkerKind::Selected),
                marker(MarkerKind::Ended)
            ]),
            slate
        ));
        assert!(!has_colour(
            &draw(vec![marker(MarkerKind::Selected)]),
            slate
        ));
    }

    #[test]
    fn mrr_highlights_smartmixed_and_shows_the_spread_over_seeds() {
        let methods = names(&["relu", "smartmixed"]);
        let mrr_values = vec![("relu".to_string(), 0.75), ("smartmixed".to_string(), 0.5)];
        let one = mrr(&methods, &mrr_values, &[], "smartmixed", 4);
        let (svg, png) = one.render().unwrap();
        let (w, h, rgb) = decode(&png);
        assert_eq!((w, h), SIZE);
        assert!(has_colour(&rgb, SMARTMIXED_COLOUR) && has_colour(&rgb, OTHER_METHOD_COLOUR));
        assert!(
            svg.contains("0.750") && svg.contains("0.500"),
            "values printed"
        );
        // Two seeds: bars are the mean of the per-seed MRRs, with their sd.
        let per_seed = vec![
            vec![("relu".to_string(), 1.0), ("smartmixed".to_string(), 0.5)],
            vec![("relu".to_string(), 0.5), ("smartmixed".to_string(), 0.5)],
        ];
        let Figure::Bars(b) = mrr(&methods, &mrr_values, &per_seed, "smartmixed", 4) else {
            panic!("not bars")
        };
        assert_eq!(b.values, vec![vec![0.75], vec![0.5]]);
        assert!((b.spread[0].sd - 0.5f64.sqrt() * 0.5).abs() < 1e-12);
        assert_eq!(b.spread[1].points, vec![0.5, 0.5]);
        let (svg, _) = Figure::Bars(b).render().unwrap();
        assert!(svg.contains("0.750 ± 0.354") && svg.contains("2 seeds"));
        // No SmartMixed in the sweep: nothing highlighted, every bar in the palette.
        let Figure::Bars(b) = mrr(&names(&["relu"]), &mrr_values[..1], &[], "smartmixed", 1) else {
            panic!("not bars")
        };
        assert_eq!(b.highlight, None);
    }

    #[test]
    fn grids_and_bars_render_within_their_pixel_bounds() {
        let panel = Lines {
            series: vec![curve(&[1.0, 2.0])],
            ..Lines::default()
        };
        for panels in [1, 4, 40] {
            let fig = Figure::Grid {
                title: "t".into(),
                columns: 3,
                panels: vec![panel.clone(); panels],
            };
            let (_, png) = fig.render().unwrap();
            let (w, h, _) = decode(&png);
            assert_eq!((w, h), fig.size());
            assert!(w <= MAX_SIZE.0 && h <= MAX_SIZE.1, "{w} x {h}");
        }
        let fig = final_shares(
            (1..=24).map(|l| format!("{l} (768)")).collect(),
            &names(&["relu", "elu"]),
            vec![vec![50.0, 50.0]; 24],
            None,
        );
        let (_, png) = fig.render().unwrap();
        assert_eq!(decode(&png).0, MAX_SIZE.0);
    }
}
