//! Browser tests of the Train page's line chart (`app/src/chart.rs`), run by
//! wasm-bindgen-test in headless Chromium. Pixels are read back with `getImageData`; the
//! legend also paints the series' colour, so marker and line pixels are counted as the
//! excess over the same chart with the series empty.
#![cfg(target_arch = "wasm32")]

use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast;
use patchwork_app::chart::{self, ChartSpec, LineChart, Series};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A colour that nothing else on the chart uses.
const COLOUR: (u8, u8, u8) = (200, 30, 160);

fn spec(points: Vec<(f64, f64)>) -> ChartSpec {
    ChartSpec {
        title: "training loss".into(),
        y_label: "loss".into(),
        x_label: "step".into(),
        series: vec![Series { name: "loss".into(), color: COLOUR, points }],
        ..ChartSpec::default()
    }
}

/// Mount `f` in a fresh element of the page and return that element.
fn mount<N: IntoView + 'static>(f: impl FnOnce() -> N + 'static) -> web_sys::HtmlElement {
    let document = document();
    let host: web_sys::HtmlElement = document.create_element("div").unwrap().unchecked_into();
    document.body().unwrap().append_child(&host).unwrap();
    leptos::mount::mount_to(host.clone(), f).forget();
    host
}

/// Let effects run: wait for a macrotask, after every pending microtask.
async fn settle() {
    let timeout = js_sys::Promise::new(&mut |resolve, _| {
        window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0).unwrap();
    });
    wasm_bindgen_futures::JsFuture::from(timeout).await.unwrap();
}

/// Mount a [`LineChart`] of `spec` and return its `<figure>` and `<canvas>` once drawn.
async fn mount_chart(spec: ChartSpec) -> (web_sys::Element, web_sys::HtmlCanvasElement) {
    let host = mount(move || view! { <LineChart spec=Signal::stored(spec) testid="chart" /> });
    settle().await;
    let figure = host.query_selector("[data-testid=chart]").unwrap().expect("no figure");
    let canvas = figure.query_selector("canvas").unwrap().expect("no canvas").unchecked_into();
    (figure, canvas)
}

fn new_canvas(width: u32, height: u32) -> web_sys::HtmlCanvasElement {
    let canvas: web_sys::HtmlCanvasElement = document().create_element("canvas").unwrap().unchecked_into();
    canvas.set_width(width);
    canvas.set_height(height);
    document().body().unwrap().append_child(&canvas).unwrap();
    canvas
}

/// Pixels within 8 per channel of `rgb`.
fn pixels_of(canvas: &web_sys::HtmlCanvasElement, (r, g, b): (u8, u8, u8)) -> usize {
    let context: web_sys::CanvasRenderingContext2d = canvas.get_context("2d").unwrap().unwrap().unchecked_into();
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    let data = context.get_image_data(0.0, 0.0, w, h).unwrap().data();
    data.chunks_exact(4).filter(|p| p[0].abs_diff(r) <= 8 && p[1].abs_diff(g) <= 8 && p[2].abs_diff(b) <= 8).count()
}

/// Pixels of the series' colour beyond those of the same chart with no points (the legend).
fn series_pixels(canvas: &web_sys::HtmlCanvasElement) -> usize {
    let empty = new_canvas(canvas.width(), canvas.height());
    chart::draw(&empty, &spec(vec![])).unwrap();
    let (drawn, legend) = (pixels_of(canvas, COLOUR), pixels_of(&empty, COLOUR));
    console_log!("{drawn} pixels of the series' colour, {legend} of them expected in the legend");
    drawn.saturating_sub(legend)
}

fn data_points(figure: &web_sys::Element) -> String {
    figure.get_attribute("data-points").unwrap_or_default()
}

#[wasm_bindgen_test]
async fn three_points_draw_a_coloured_line() {
    let (figure, canvas) = mount_chart(spec(vec![(0.0, 5.0), (120.0, 4.6), (240.0, 4.312)])).await;
    assert_eq!(data_points(&figure), "3");
    // A line across most of the 480 px plot, 2 px wide, plus three markers.
    let pixels = series_pixels(&canvas);
    assert!(pixels > 300, "only {pixels} pixels of the series' colour in the plot");
    let caption = figure.query_selector("figcaption").unwrap().unwrap().text_content().unwrap();
    assert_eq!(caption, "training loss loss 4.3120 at step 240");
}

#[wasm_bindgen_test]
async fn a_single_point_draws_a_visible_marker() {
    let (figure, canvas) = mount_chart(spec(vec![(40.0, 0.5)])).await;
    assert_eq!(data_points(&figure), "1");
    // A filled circle of radius 3 CSS px covers about 28 px at devicePixelRatio 1.
    let pixels = series_pixels(&canvas);
    assert!(pixels >= 9, "only {pixels} pixels of the marker");
}

#[wasm_bindgen_test]
async fn empty_series_draw_without_error() {
    let (figure, canvas) = mount_chart(spec(vec![])).await;
    assert_eq!(data_points(&figure), "0");
    let caption = figure.query_selector("figcaption").unwrap().unwrap().text_content().unwrap();
    assert!(caption.contains("no data yet"), "{caption}");
    assert_eq!(series_pixels(&canvas), 0);

    let no_series = ChartSpec { series: vec![], ..spec(vec![]) };
    chart::draw(&canvas, &no_series).unwrap();
    let log_axis = ChartSpec { log_y: true, ..spec(vec![]) };
    chart::draw(&canvas, &log_axis).unwrap();
}

#[wasm_bindgen_test]
async fn non_finite_values_are_skipped() {
    let points = vec![(0.0, 2.0), (10.0, f64::NAN), (20.0, 1.5), (f64::INFINITY, 1.0), (30.0, f64::NEG_INFINITY)];
    let (figure, canvas) = mount_chart(spec(points)).await;
    assert_eq!(data_points(&figure), "2");
    assert!(series_pixels(&canvas) > 100, "the finite points were not drawn");
    let caption = figure.query_selector("figcaption").unwrap().unwrap().text_content().unwrap();
    assert!(caption.ends_with("loss 1.5000 at step 20"), "{caption}");
}

#[wasm_bindgen_test]
fn flat_ranges_log_axes_and_fixed_ranges_draw() {
    let canvas = new_canvas(480, 260);
    chart::draw(&canvas, &spec(vec![(0.0, 1.0), (10.0, 1.0)])).unwrap();
    chart::draw(&canvas, &spec(vec![(0.0, 0.0)])).unwrap();
    chart::draw(&canvas, &ChartSpec { y_range: Some((0.0, 1.0)), ..spec(vec![(0.0, 0.25)]) }).unwrap();
    // On a log axis a zero cannot be drawn, so it is skipped like a NaN.
    let log = ChartSpec { log_y: true, ..spec(vec![(0.0, 10.0), (5.0, 0.0), (9.0, 0.1)]) };
    assert_eq!(log.drawn_points(), 2);
    chart::draw(&canvas, &log).unwrap();
}

#[wasm_bindgen_test]
async fn chart_redraws_when_its_spec_changes() {
    let data = RwSignal::new(spec(vec![(0.0, 1.0)]));
    let host = mount(move || view! { <LineChart spec=data testid="live" /> });
    settle().await;
    let figure = host.query_selector("[data-testid=live]").unwrap().unwrap();
    let canvas: web_sys::HtmlCanvasElement = figure.query_selector("canvas").unwrap().unwrap().unchecked_into();
    let before = series_pixels(&canvas);
    data.update(|s| s.series[0].points.extend([(100.0, 0.8), (200.0, 0.6)]));
    settle().await;
    assert_eq!(data_points(&figure), "3");
    let after = series_pixels(&canvas);
    assert!(after > before + 100, "{before} pixels before the update, {after} after");
}
