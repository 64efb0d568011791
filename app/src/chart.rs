//! Line charts for the Train page: loss, accuracy and the like against the training step.
//!
//! [`draw`] renders a [`ChartSpec`] onto a 2D canvas with `plotters` (layout, ticks, legend)
//! through `plotters-canvas` (a 2D-context backend; a `webgpu` canvas would not present in
//! headless Chromium, and a chart has no need of one). [`LineChart`] wraps it in a
//! `<figure>` that redraws whenever its spec signal changes, states how many points it drew
//! in `data-points`, and repeats the last value of each series as text in its caption.
//!
//! Points that cannot be drawn (NaN, ±inf, and values ≤ 0 on a log axis) are skipped
//! everywhere: in the drawing, in `data-points` and in the caption.

use leptos::prelude::*;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_canvas::CanvasBackend;
use std::ops::Range;

/// One curve: `points` are `(step, value)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub name: String,
    /// RGB.
    pub color: (u8, u8, u8),
    pub points: Vec<(f64, f64)>,
}

/// Everything one chart shows. The title goes in [`LineChart`]'s caption, not on the canvas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChartSpec {
    pub title: String,
    pub y_label: String,
    pub x_label: String,
    pub series: Vec<Series>,
    /// `None`: fit the data, with a 5% margin.
    pub y_range: Option<(f64, f64)>,
    pub log_y: bool,
}

impl Series {
    /// The points that can be drawn on a linear (or, with `log_y`, logarithmic) y axis.
    pub fn drawable(&self, log_y: bool) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points.iter().copied().filter(move |&(x, y)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0))
    }
}

impl ChartSpec {
    /// How many points [`draw`] puts on the canvas.
    pub fn drawn_points(&self) -> usize {
        self.series.iter().map(|s| s.drawable(self.log_y).count()).sum()
    }

    /// The last drawable value of each series as text, e.g. "loss 4.3120 at step 240".
    pub fn last_values(&self) -> String {
        let last = |s: &Series| match s.drawable(self.log_y).last() {
            Some((x, y)) => format!("{} {} at step {x}", s.name, number(y)),
            None => format!("{}: no data yet", s.name),
        };
        self.series.iter().map(last).collect::<Vec<_>>().join(", ")
    }
}

fn number(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e5).contains(&v.abs()) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

const INK: RGBColor = RGBColor(0x23, 0x26, 0x3a);
const MUTED: RGBColor = RGBColor(0x6b, 0x6f, 0x85);
const GRID: RGBColor = RGBColor(0xe4, 0xe1, 0xd8);

/// Clear `canvas` and draw `spec` on it. Sizes are CSS pixels times `devicePixelRatio`, to
/// match a canvas whose backing store is scaled as [`LineChart`] scales it.
pub fn draw(canvas: &web_sys::HtmlCanvasElement, spec: &ChartSpec) -> Result<(), String> {
    let scale = web_sys::window().map_or(1.0, |w| w.device_pixel_ratio()).max(1.0);
    let backend = CanvasBackend::with_canvas_object(canvas.clone()).ok_or("the canvas has no 2d context")?;
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;

    let points: Vec<_> = spec.series.iter().flat_map(|s| s.drawable(spec.log_y)).collect();
    let (x0, x1) = fit(points.iter().map(|p| p.0), 0.02).unwrap_or((0.0, 100.0));
    let given =
        spec.y_range.filter(|&(lo, hi)| lo.is_finite() && lo < hi && hi.is_finite() && (!spec.log_y || lo > 0.0));
    let (y0, y1) = if spec.log_y {
        given.unwrap_or_else(|| fit(points.iter().map(|p| p.1.log10()), 0.05).map_or((1.0, 10.0), decades))
    } else {
        given.or_else(|| fit(points.iter().map(|p| p.1), 0.05)).unwrap_or((0.0, 1.0))
    };
    let legend = legend_corner(&points, (x0, x1), (y0, y1), spec.log_y);
    let result = if spec.log_y {
        plot(&root, spec, x0..x1, (y0..y1).log_scale(), legend, scale)
    } else {
        plot(&root, spec, x0..x1, y0..y1, legend, scale)
    };
    result.map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// `min..max` of `values` widened by `margin` of its span. A flat range (one point, or a
/// constant curve) is padded by 5% of its value, or by 1 around zero, so it keeps a height.
fn fit(values: impl Iterator<Item = f64>, margin: f64) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold(None, |acc: Option<(f64, f64)>, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })?;
    let pad = match hi - lo {
        span if span > 0.0 => span * margin,
        _ if lo == 0.0 => 1.0,
        _ => lo.abs() * 0.05,
    };
    Some((lo - pad, hi + pad))
}

/// The whole decades around `10^lo..10^hi`: plotters puts log ticks only at powers of ten and
/// their multiples. The nudge keeps the bottom tick from being lost to rounding.
fn decades((lo, hi): (f64, f64)) -> (f64, f64) {
    let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    (10f64.powf(lo) * (1.0 - 1e-9), 10f64.powf(hi))
}

/// The corner of the plot where the legend hides the fewest points (the upper right on ties).
fn legend_corner(points: &[(f64, f64)], x: (f64, f64), y: (f64, f64), log_y: bool) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    let y_axis = |v: f64| if log_y { v.log10() } else { v };
    let fraction = |v: f64, (lo, hi): (f64, f64)| (v - lo) / (hi - lo);
    // The legend box covers about a third of the width and a quarter of the height.
    let hidden = |right: bool, top: bool| {
        let covers = |&&(px, py): &&(f64, f64)| {
            let (fx, fy) = (fraction(px, x), fraction(y_axis(py), (y_axis(y.0), y_axis(y.1))));
            (if right { fx > 0.6 } else { fx < 0.4 }) && (if top { fy > 0.7 } else { fy < 0.3 })
        };
        points.iter().filter(covers).count()
    };
    [(UpperRight, true, true), (UpperLeft, false, true), (LowerRight, true, false), (LowerLeft, false, false)]
        .into_iter()
        .min_by_key(|&(_, right, top)| hidden(right, top))
        .map_or(UpperRight, |(corner, ..)| corner)
}

/// The chart proper, generic over the y axis so that one body serves linear and log scales.
fn plot<Y>(
    root: &DrawingArea<CanvasBackend, Shift>,
    spec: &ChartSpec,
    x: Range<f64>,
    y: Y,
    legend: SeriesLabelPosition,
    scale: f64,
) -> Result<(), DrawingAreaErrorKind<<CanvasBackend as DrawingBackend>::ErrorType>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let px = |v: f64| (v * scale).round() as u32;
    let font = |size: f64| ("sans-serif", size * scale).into_font();
    let mut chart = ChartBuilder::on(root)
        .margin(px(10.0))
        .x_label_area_size(px(36.0))
        .y_label_area_size(px(56.0))
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(&spec.x_label)
        .y_desc(&spec.y_label)
        .x_labels(6)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        // Plotters labels 2×, 3×, … within a decade only when asked for this many.
        .y_labels(if spec.log_y { 10 } else { 5 })
        .label_style(font(11.0).color(&MUTED))
        .axis_desc_style(font(12.0).color(&INK))
        .axis_style(INK)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .draw()?;

    for series in &spec.series {
        let (r, g, b) = series.color;
        let color = RGBColor(r, g, b);
        let line = color.stroke_width(px(2.0));
        let points: Vec<_> = series.drawable(spec.log_y).collect();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), line))?
            .label(series.name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + px(16.0) as i32, y)], line));
        // Markers too, since a curve sampled every K steps may have a single point.
        let radius = px(3.0);
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, radius, color.filled())))?;
    }
    if spec.series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .position(legend)
            .label_font(font(11.0).color(&INK))
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .draw()?;
    }

    if spec.drawn_points() == 0 {
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let centre = ((xs.start + xs.end) / 2, (ys.start + ys.end) / 2);
        let style = font(14.0).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new("no data yet", centre, style))?;
    }
    Ok(())
}

/// A tick label with six significant digits at most: plotters' own prints "200.0" for a step
/// and "0.30000000000000004" for a log tick.
fn tick_label(v: &f64) -> String {
    if *v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (5 - v.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A chart of `spec`, `width`×`height` CSS pixels (480×260 unless given).
#[component]
pub fn LineChart(
    #[prop(into)] spec: Signal<ChartSpec>,
    #[prop(into)] testid: String,
    #[prop(optional)] width: Option<u32>,
    #[prop(optional)] height: Option<u32>,
) -> impl IntoView {
    let (width, height) = (width.unwrap_or(480), height.unwrap_or(260));
    // The backing store has device pixels, so that lines and text stay sharp on HiDPI screens.
    let dpr = window().device_pixel_ratio().max(1.0);
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move || {
        let Some(canvas) = canvas.get() else { return };
        if let Err(e) = spec.with(|spec| draw(&canvas, spec)) {
            leptos::logging::warn!("chart: {e}");
        }
    });
    view! {
        <figure class="chart" data-testid=testid data-points=move || spec.with(ChartSpec::drawn_points).to_string()>
            <canvas
                node_ref=canvas
                width=(width as f64 * dpr).round() as u32
                height=(height as f64 * dpr).round() as u32
                style=format!("width: {width}px; height: {height}px")
            ></canvas>
            <figcaption style=format!("max-width: {width}px")>
                <span class="chart-title">{move || spec.with(|s| s.title.clone())}</span>
                " "
                <span class="chart-last">{move || spec.with(ChartSpec::last_values)}</span>
            </figcaption>
        </figure>
    }
}
