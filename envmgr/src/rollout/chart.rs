//! The rollout chart attached to the rollback alert and served at its link: a PNG with two
//! panels over the time since the rollout started, error rate (%) above and p99 latency (ms)
//! below, one line per version (stable/baseline in blue, canary in orange), grey vertical
//! marks where the step changed and a red one where the decision was taken, and a title
//! naming repo, channel and version.
//!
//! Drawn with `plotters` into an RGB buffer and encoded with `png`. Text needs a font file:
//! DejaVu Sans (Debian package `fonts-dejavu-core`) or another common sans font is loaded
//! from the usual system paths the first time a chart is drawn (`SLIPWAY_CHART_FONT` names
//! another file). Without one the chart still has its lines, axes, grid, marks and coloured
//! legend swatches, just no text, and a warning is logged once.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;

/// Which version a point measures.
pub use super::model::Version;

/// One measurement of one version.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartPoint {
    /// Seconds since the rollout started.
    pub at_s: f64,
    pub version: Version,
    /// Failed requests over requests in the interval, as a fraction (0.081 = 8.1%).
    pub error_rate: f64,
    /// p99 latency in the interval; `None` when the version answered nothing then (the line
    /// has a gap).
    pub p99_ms: Option<f64>,
}

/// What to draw.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChartData {
    /// E.g. `shop / production: v2 (0123abc)`.
    pub title: String,
    /// In any order; each version's line is drawn through its points sorted by time.
    pub points: Vec<ChartPoint>,
    /// Step changes: seconds since the start and a label such as `25%`.
    pub marks: Vec<(f64, String)>,
    /// The decision, drawn in red: e.g. `(212.0, "rolled back")`.
    pub decision: Option<(f64, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("drawing the rollout chart: {0}")]
    Draw(String),
    #[error("encoding the rollout chart as PNG: {0}")]
    Encode(String),
}

/// Size of the PNG, in pixels.
pub const CHART_SIZE: (u32, u32) = (1000, 680);

/// Stable/baseline: blue.
pub const STABLE_COLOUR: RGBColor = RGBColor(31, 119, 180);
/// Canary: orange.
pub const CANARY_COLOUR: RGBColor = RGBColor(255, 127, 14);
const STEP_MARK_COLOUR: RGBColor = RGBColor(150, 150, 150);
const DECISION_COLOUR: RGBColor = RGBColor(214, 39, 40);
const TEXT_COLOUR: RGBColor = RGBColor(40, 40, 40);
const AXIS_COLOUR: RGBColor = RGBColor(120, 120, 120);

/// The family name the loaded font is registered under in plotters.
const FONT_FAMILY: &str = "slipway-chart";

/// Where sans fonts usually are: Debian/Ubuntu, Fedora, Arch, Alpine, macOS.
const FONT_PATHS: [&str; 8] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Draws the chart and returns the PNG bytes.
pub fn render_chart(series: &ChartData) -> Result<Vec<u8>, ChartError> {
    render(series, text_font_loaded())
}

/// Loads a font once; whether text can be drawn.
fn text_font_loaded() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let override_path = std::env::var("SLIPWAY_CHART_FONT").ok();
        let candidates = override_path.iter().map(String::as_str).chain(FONT_PATHS);
        for path in candidates {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            // plotters keeps fonts for the life of the process; this happens once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok() {
                tracing::debug!(font = path, "rollout charts use this font");
                return true;
            }
            tracing::warn!(font = path, "not a usable font file; trying the next");
        }
        tracing::warn!(
            "no font for rollout chart text (install fonts-dejavu-core, or set \
             SLIPWAY_CHART_FONT to a .ttf file): charts are drawn without text"
        );
        false
    })
}

fn render(series: &ChartData, with_text: bool) -> Result<Vec<u8>, ChartError> {
    let (width, height) = CHART_SIZE;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, CHART_SIZE).into_drawing_area();
        draw(&root, series, with_text).map_err(|e| ChartError::Draw(e.to_string()))?;
        root.present()
            .map_err(|e| ChartError::Draw(e.to_string()))?;
    }
    encode_png(&rgb, width, height)
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| ChartError::Encode(e.to_string()))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| ChartError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| ChartError::Encode(e.to_string()))?;
    Ok(out)
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

fn font(size: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&TEXT_COLOUR)
}

fn draw(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    series: &ChartData,
    with_text: bool,
) -> DrawResult<()> {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(62);

    // Title, then the legend: a swatch per version.
    if with_text {
        header.draw(&Text::new(series.title.clone(), (20, 8), font(22.0)))?;
    }
    let legend = [
        (STABLE_COLOUR, "stable (baseline)"),
        (CANARY_COLOUR, "canary"),
        (STEP_MARK_COLOUR, "step change"),
        (DECISION_COLOUR, "decision"),
    ];
    let mut x = 20;
    for (colour, label) in legend {
        header.draw(&Rectangle::new([(x, 40), (x + 26, 52)], colour.filled()))?;
        x += 32;
        if with_text {
            let style = font(15.0);
            header.draw(&Text::new(label, (x, 38), style.clone()))?;
            x += header.estimate_text_size(label, &style)?.0 as i32;
        }
        x += 28;
    }

    let max_at = series
        .points
        .iter()
        .map(|p| p.at_s)
        .chain(series.marks.iter().map(|(at, _)| *at))
        .chain(series.decision.iter().map(|(at, _)| *at))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        // Room right of the last point, so a decision there is not drawn on the border.
        * 1.03;
    let panels = body.split_evenly((2, 1));
    let error_panel = Panel {
        axis: "error rate (%)",
        value: |p: &ChartPoint| Some(p.error_rate * 100.0),
        floor: 1.0,
        show_mark_labels: true,
    };
    let latency_panel = Panel {
        axis: "p99 latency (ms)",
        value: |p: &ChartPoint| p.p99_ms,
        floor: 10.0,
        show_mark_labels: false,
    };
    draw_panel(&panels[0], series, &error_panel, max_at, with_text, false)?;
    draw_panel(&panels[1], series, &latency_panel, max_at, with_text, true)?;
    Ok(())
}

struct Panel {
    axis: &'static str,
    value: fn(&ChartPoint) -> Option<f64>,
    /// The least top of the y axis, so a flat zero line is not drawn at the top.
    floor: f64,
    show_mark_labels: bool,
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    series: &ChartData,
    panel: &Panel,
    max_at: f64,
    with_text: bool,
    time_axis: bool,
) -> DrawResult<()> {
    let y_max = series
        .points
        .iter()
        .filter_map(panel.value)
        .filter(|v| v.is_finite())
        .fold(panel.floor, f64::max)
        * 1.15;
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_left(10)
        .margin_right(25)
        .margin_top(if panel.show_mark_labels { 22 } else { 8 })
        .margin_bottom(6);
    if with_text {
        builder
            .x_label_area_size(if time_axis { 44 } else { 24 })
            .y_label_area_size(72);
    } else {
        builder.x_label_area_size(6).y_label_area_size(6);
    }
    let mut chart = builder.build_cartesian_2d(0.0..max_at, 0.0..y_max)?;

    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .axis_style(AXIS_COLOUR)
        .x_labels(10)
        .y_labels(6);
    if with_text {
        mesh.label_style(font(14.0))
            .axis_desc_style(font(15.0))
            .y_desc(panel.axis)
            .x_label_formatter(&|s| minutes_seconds(*s))
            .y_label_formatter(&|v| axis_number(*v));
        if time_axis {
            mesh.x_desc("time since the rollout started (m:ss)");
        }
    } else {
        // No font: the grid without tick labels (plotters needs a font for any text).
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    if !with_text {
        // The axis lines the disabled axes would have drawn.
        chart.draw_series(LineSeries::new(
            [(0.0, y_max), (0.0, 0.0), (max_at, 0.0)],
            AXIS_COLOUR,
        ))?;
    }

    // Marks under the lines, so the lines stay visible where they cross.
    let marks = series
        .marks
        .iter()
        .map(|(at, label)| (*at, label.as_str(), STEP_MARK_COLOUR, 1))
        .chain(
            series
                .decision
                .iter()
                .map(|(at, label)| (*at, label.as_str(), DECISION_COLOUR, 2)),
        );
    for (at, label, colour, width) in marks {
        if !at.is_finite() {
            continue;
        }
        chart.draw_series(LineSeries::new(
            [(at, 0.0), (at, y_max)],
            colour.stroke_width(width),
        ))?;
        if with_text && panel.show_mark_labels {
            // Above the plot, right of the line, or left of it where it would run off.
            let label_colour = if colour == STEP_MARK_COLOUR {
                TEXT_COLOUR
            } else {
                colour
            };
            let style = font(13.0).color(&label_colour);
            let (base_x, base_y) = area.get_base_pixel();
            let (px, py) = chart.backend_coord(&(at, y_max));
            let (px, py) = (px - base_x, py - base_y);
            let (text_width, _) = area.estimate_text_size(label, &style)?;
            let right_edge = area.dim_in_pixel().0 as i32;
            let x = if px + 4 + text_width as i32 > right_edge {
                px - 4 - text_width as i32
            } else {
                px + 4
            };
            area.draw(&Text::new(label.to_string(), (x, py - 18), style))?;
        }
    }

    for (version, colour) in [
        (Version::Stable, STABLE_COLOUR),
        (Version::Canary, CANARY_COLOUR),
    ] {
        let mut points: Vec<&ChartPoint> = series
            .points
            .iter()
            .filter(|p| p.version == version && p.at_s.is_finite())
            .collect();
        points.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        // A missing value breaks the line into runs; a lone point is drawn as a dot.
        for run in points.split(|p| !(panel.value)(p).is_some_and(f64::is_finite)) {
            let coords: Vec<(f64, f64)> = run
                .iter()
                .filter_map(|p| (panel.value)(p).map(|v| (p.at_s, v)))
                .collect();
            if coords.len() == 1 {
                chart.draw_series(std::iter::once(Circle::new(coords[0], 3, colour.filled())))?;
            } else if coords.len() > 1 {
                chart.draw_series(LineSeries::new(coords, colour.stroke_width(2)))?;
            }
        }
    }
    Ok(())
}

/// `0:30`, `12:05`.
fn minutes_seconds(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    format!("{}:{:02}", total / 60, total % 60)
}

/// Tick values without a tail of zeros: `0`, `0.5`, `12`, `1500`.
fn axis_number(value: f64) -> String {
    if value.abs() >= 10.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rollout that went 5% → 25% and was rolled back at 95 s: the canary's errors climb
    /// after the second step while the baseline stays near 0.2%.
    fn sample_rollout() -> ChartData {
        let mut points = Vec::new();
        for second in (0..=95).step_by(5) {
            let at_s = f64::from(second);
            points.push(ChartPoint {
                at_s,
                version: Version::Stable,
                error_rate: 0.002 + 0.001 * f64::from(second % 3),
                p99_ms: Some(120.0 + f64::from(second % 7) * 3.0),
            });
            let bad = second >= 45;
            points.push(ChartPoint {
                at_s,
                version: Version::Canary,
                error_rate: if bad {
                    0.06 + 0.002 * f64::from(second % 5)
                } else {
                    0.003
                },
                // A gap: no canary answers in the 60 s interval.
                p99_ms: (second != 60)
                    .then(|| if bad { 340.0 } else { 125.0 } + f64::from(second % 4) * 4.0),
            });
        }
        ChartData {
            title: "shop / production: v2 (0123abc)".into(),
            points,
            marks: vec![(0.0, "5%".into()), (40.0, "25%".into())],
            decision: Some((95.0, "rolled back: errors 6.4% vs 0.3%".into())),
        }
    }

    fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        let decoder = png::Decoder::new(png_bytes);
        let mut reader = decoder.read_info().expect("PNG header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("PNG frame");
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    fn pixels_of(rgb: &[u8], colour: RGBColor) -> usize {
        rgb.chunks_exact(3)
            .filter(|px| px == &[colour.0, colour.1, colour.2])
            .count()
    }

    #[test]
    fn the_chart_is_a_png_with_both_series() {
        let png_bytes = render_chart(&sample_rollout()).expect("chart");
        let (info, rgb) = decode(&png_bytes);
        assert_eq!((info.width, info.height), CHART_SIZE);
        assert_eq!(info.color_type, png::ColorType::Rgb);
        // Legend swatches alone are 27x13 pixels; lines add far more.
        let swatch = 27 * 13;
        assert!(pixels_of(&rgb, STABLE_COLOUR) > swatch + 500, "stable line");
        assert!(pixels_of(&rgb, CANARY_COLOUR) > swatch + 500, "canary line");
        assert!(
            pixels_of(&rgb, DECISION_COLOUR) > swatch + 200,
            "decision mark"
        );
        // The example the issue asks to look at.
        std::fs::write(std::env::temp_dir().join("rollout-chart.png"), &png_bytes)
            .expect("write the example chart");
    }

    #[test]
    fn series_are_told_apart_by_what_they_show() {
        // Only the canary fails: its colour appears high in the error panel, so the chart
        // differs from one where both versions are fine.
        let bad = render_chart(&sample_rollout()).expect("chart");
        let mut good_data = sample_rollout();
        for point in &mut good_data.points {
            if point.version == Version::Canary {
                point.error_rate = 0.003;
                point.p99_ms = Some(125.0);
            }
        }
        let good = render_chart(&good_data).expect("chart");
        assert_ne!(decode(&bad).1, decode(&good).1);
    }

    #[test]
    fn without_a_font_lines_axes_and_swatches_are_still_drawn() {
        let png_bytes = render(&sample_rollout(), false).expect("chart without text");
        let (info, rgb) = decode(&png_bytes);
        assert_eq!((info.width, info.height), CHART_SIZE);
        assert!(pixels_of(&rgb, STABLE_COLOUR) > 1000);
        assert!(pixels_of(&rgb, CANARY_COLOUR) > 1000);
        assert!(pixels_of(&rgb, TEXT_COLOUR) == 0, "no text drawn");
    }

    #[test]
    fn empty_and_odd_data_still_draws() {
        let empty = render_chart(&ChartData::default()).expect("empty chart");
        assert_eq!(decode(&empty).0.width, CHART_SIZE.0);
        let odd = ChartData {
            title: "odd".into(),
            points: vec![
                ChartPoint {
                    at_s: f64::NAN,
                    version: Version::Canary,
                    error_rate: 0.5,
                    p99_ms: None,
                },
                ChartPoint {
                    at_s: 3.0,
                    version: Version::Stable,
                    error_rate: f64::INFINITY,
                    p99_ms: Some(f64::NAN),
                },
            ],
            marks: vec![(f64::INFINITY, "x".into())],
            decision: None,
        };
        render_chart(&odd).expect("odd chart");
    }

    #[test]
    fn axis_text() {
        assert_eq!(minutes_seconds(0.0), "0:00");
        assert_eq!(minutes_seconds(95.4), "1:35");
        assert_eq!(minutes_seconds(725.0), "12:05");
        assert_eq!(axis_number(0.5), "0.5");
        assert_eq!(axis_number(0.25), "0.25");
        assert_eq!(axis_number(2.0), "2");
        assert_eq!(axis_number(1500.0), "1500");
    }
}
