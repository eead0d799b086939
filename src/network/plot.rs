//! The pictures, as PNG and SVG through plotters: the link utilisation over time (the
//! chapter's Figure 3-7, from a run's own steps) and loss and accuracy over training.
//!
//! Text needs a font: DejaVu Sans, read at run time from Debian's fonts-dejavu-core (or any
//! path in GPU_TRAIN_FONT), so the pictures look the same on every machine.

use super::link::LinkStep;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Registers the font once; an error says what to install.
/// The font files tried after GPU_TRAIN_FONT: DejaVu Sans where distributions put it.
const SYSTEM_FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// The largest font file read: DejaVu Sans is 0.7 MB, the largest CJK fonts about 20 MB.
const MAX_FONT_BYTES: u64 = 64 << 20;

/// Registers the pictures' font once: GPU_TRAIN_FONT's file if it is set and usable (if not,
/// a note names the variable, the file and the fault, and the system's DejaVu Sans is used),
/// else the system's.
fn font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Some(chosen) = std::env::var_os("GPU_TRAIN_FONT").map(PathBuf::from) {
            match register(&chosen) {
                Ok(()) => return Ok(()),
                Err(fault) => eprintln!(
                    "note: GPU_TRAIN_FONT={}: {fault}; using the system's DejaVu Sans instead",
                    chosen.display()
                ),
            }
        }
        let found = SYSTEM_FONTS.iter().map(Path::new).find(|p| p.is_file());
        match found {
            Some(path) => register(path).map_err(|fault| format!("{}: {fault}", path.display())),
            None => Err("no font for the pictures' text: install DejaVu Sans (Debian: apt-get install fonts-dejavu-core) or set GPU_TRAIN_FONT to a .ttf file".to_string()),
        }
    })
    .clone()
    .map_err(Error::Config)
}

/// Registers the TrueType font at `path` as the pictures' sans-serif, or says why not.
fn register(path: &Path) -> std::result::Result<(), String> {
    let bytes = crate::files::read_input(path, MAX_FONT_BYTES)
        .map_err(|e| format!("cannot read the font: {e}"))?;
    // plotters keeps the font for the life of the program.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "not a usable TrueType font".to_string())
}

fn draw_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Write {
        path: path.to_path_buf(),
        fault: format!("cannot draw the picture: {e:?}"),
    }
}

/// Draws with `draw` into `DIR/NAME.png` and `DIR/NAME.svg`; returns both paths.
pub(super) fn both(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    draw: &dyn Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
    draw_svg: &dyn Fn(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
) -> Result<Vec<PathBuf>> {
    font()?;
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) && !dir.exists() {
        return Err(Error::Config(format!(
            "-o {}: a symbolic link to nothing; give a folder for the pictures (it is made if missing)",
            dir.display()
        )));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Config(format!(
            "-o {}: that is a file; give a folder for the pictures (it is made if missing)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| match e.raw_os_error() {
        // A file where a folder of the path should be: the user's path, not a failure here.
        Some(libc::ENOTDIR) => Error::Config(format!(
            "-o {}: part of that path is a file; give a folder for the pictures",
            dir.display()
        )),
        _ => Error::Write {
            path: dir.to_path_buf(),
            fault: format!("cannot make the pictures' folder: {e}"),
        },
    })?;
    let (png, svg) = (
        dir.join(format!("{name}.png")),
        dir.join(format!("{name}.svg")),
    );
    // Pictures are written only where nothing but a regular file is in the way.
    crate::files::check_writable(&png, "a picture")?;
    crate::files::check_writable(&svg, "a picture")?;
    // Both drawn in memory, then each written as every output is (a temporary file renamed
    // over the old one): a picture is whole or not replaced, whatever stops the process, and
    // a full disk is reported as the write it is.
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        area.fill(&WHITE).map_err(draw_err(&png))?;
        draw(&area)?;
        area.present().map_err(draw_err(&png))?;
    }
    let mut svg_text = String::new();
    {
        let area = SVGBackend::with_string(&mut svg_text, size).into_drawing_area();
        area.fill(&WHITE).map_err(draw_err(&svg))?;
        draw_svg(&area)?;
        area.present().map_err(draw_err(&svg))?;
    }
    let png_bytes = encode_png(&rgb, size).map_err(draw_err(&png))?;
    let kept = "an earlier picture of that name is untouched";
    crate::files::write_file(&png, &png_bytes, "the picture", kept)?;
    crate::files::write_file(&svg, svg_text.as_bytes(), "the picture", kept)?;
    Ok(vec![png, svg])
}

/// An RGB image as PNG bytes.
fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        // Deflate at its best with the Paeth filter: line charts on white compress ~3× better
        // than the defaults, a few milliseconds a picture.
        enc.set_compression(png::Compression::Best);
        enc.set_filter(png::FilterType::Paeth);
        enc.write_header()?.write_image_data(rgb)?;
    }
    Ok(out)
}

/// The utilisation of one replica's link over `steps` (compute: 0 %, sync: 100 %), the
/// phases shaded, as Figure 3-7 draws it. Where the trace measured the sync (a replica waits
/// for the slowest peer, a slow link), the measured sync is drawn too, as a bar above the
/// curve, and the time axis follows it: a step lasts its compute and the longer of the two.
fn utilisation<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    steps: &[LinkStep],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| Error::Config(format!("drawing: {x:?}"));
    let step_ms = |s: &LinkStep| (s.compute_s + s.sync_s.max(s.measured_sync_s)) * 1e3;
    let total: f64 = steps.iter().map(step_ms).sum::<f64>();
    if !(total.is_finite() && total > 0.0 && total < 1e12) {
        return Err(Error::Config(format!(
            "cannot draw steps that last {total:.3e} ms in all (a picture takes more than 0 and less than 1e12 ms)"
        )));
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        // Up to 145 %: the band above the measured syncs (102-108) holds the legend, off the data.
        .build_cartesian_2d(0f64..total.max(1e-6), 0f64..145f64)
        .map_err(e)?;
    let whole_ms = total >= 10.0;
    chart
        .configure_mesh()
        .y_label_formatter(&|v| if *v <= 100.0 { format!("{v:.0}") } else { String::new() })
        .x_label_formatter(&|v| if whole_ms { format!("{v:.0}") } else { format!("{v:.2}") })
        .x_desc("time (ms)")
        .y_desc("link utilisation (%)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    let mut t = 0.0;
    let mut line = vec![(0.0, 0.0)];
    for (i, s) in steps.iter().enumerate() {
        let (c, y) = (s.compute_s * 1e3, s.sync_s * 1e3);
        let compute = Rectangle::new([(t, 0.0), (t + c, 100.0)], RGBColor(220, 230, 245).filled());
        let sync = Rectangle::new(
            [(t + c, 0.0), (t + c + y, 100.0)],
            RGBColor(250, 215, 200).filled(),
        );
        let mut series = chart.draw_series([compute, sync]).map_err(e)?;
        if i == 0 {
            series = series.label("compute (link idle)").legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 14, y + 5)],
                    RGBColor(220, 230, 245).filled(),
                )
            });
        }
        let _ = series;
        let measured = s.measured_sync_s * 1e3;
        if measured > 0.0 {
            let bar = Rectangle::new(
                [(t + c, 102.0), (t + c + measured, 108.0)],
                RGBColor(120, 120, 120).filled(),
            );
            let series = chart.draw_series([bar]).map_err(e)?;
            if i == 0 {
                series
                    .label("sync as the trace measured it")
                    .legend(|(x, y)| {
                        Rectangle::new(
                            [(x, y - 3), (x + 14, y + 3)],
                            RGBColor(120, 120, 120).filled(),
                        )
                    });
            }
        }
        line.extend([
            (t + c, 0.0),
            (t + c, 100.0),
            (t + c + y, 100.0),
            (t + c + y, 0.0),
        ]);
        t += step_ms(s);
    }
    chart
        .draw_series(LineSeries::new(line, RGBColor(200, 60, 30).stroke_width(2)))
        .map_err(e)?
        .label("utilisation modelled: line rate while the bytes move")
        .legend(|(x, y)| {
            PathElement::new([(x, y), (x + 14, y)], RGBColor(200, 60, 30).stroke_width(2))
        });
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// `DIR/link-utilisation.{png,svg}` for `steps` on the named link.
pub fn link_utilisation(
    dir: &Path,
    name: &str,
    title: &str,
    steps: &[LinkStep],
) -> Result<Vec<PathBuf>> {
    both(
        dir,
        name,
        (1000, 420),
        &|a| utilisation(a, title, steps),
        &|a| utilisation(a, title, steps),
    )
}

/// One series of (x, y) points with a label.
pub type Series = (String, Vec<(f64, f64)>);

fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    (xlabel, ylabel): (&str, &str),
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| Error::Config(format!("drawing: {x:?}"));
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        (x0, x1) = (x0.min(x), x1.max(x));
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !y0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // The axis runs from the first point to the last (an epoch axis from 1, not 0).
    if x1 - x0 < 1e-9 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    // Values plotters cannot lay an axis over (a diverged loss of 1e308, say), each axis
    // named for what it holds.
    if !(x1.is_finite() && x1 < 1e15 && x0.is_finite()) {
        return Err(Error::Config(format!(
            "{title}: {xlabel} runs to {x1:e}, too far to draw (at most 1e15)"
        )));
    }
    if !((y1 - y0).is_finite() && y1.abs() < 1e30 && y0.abs() < 1e30) {
        return Err(Error::Config(format!(
            "{title}: {ylabel} runs from {y0:e} to {y1:e}, too large to draw"
        )));
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(e)?;
    // Whole numbers (steps, epochs) get whole-number ticks: "2", not "2.0" and "2.5".
    let whole = series.iter().flat_map(|s| s.1.iter()).all(|&(x, _)| x.fract() == 0.0);
    let span = (x1 - x0).round() as usize;
    let tick = |v: &f64| match whole {
        true if (v - v.round()).abs() < 1e-6 => format!("{:.0}", v.round()),
        true => String::new(),
        false => format!("{v}"),
    };
    chart
        .configure_mesh()
        .x_labels(if whole { (span + 1).clamp(2, 11) } else { 10 })
        .x_label_formatter(&tick)
        .x_desc(xlabel)
        .y_desc(ylabel)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    let colours = [
        RGBColor(30, 90, 180),
        RGBColor(200, 60, 30),
        RGBColor(40, 140, 60),
        RGBColor(120, 60, 160),
    ];
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(e)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c.stroke_width(2)));
    }
    // A legend only where there is more than one series to tell apart, in the corner the
    // lines leave most empty.
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(emptiest_corner(series, (x0, x1), (y0 - pad, y1 + pad)))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

/// The corner of the plot (a third of each axis) with the fewest points in it.
fn emptiest_corner(series: &[Series], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let inside = |&(x, y): &(f64, f64), right: bool, upper: bool| {
        let fx = (x - x0) / (x1 - x0).max(1e-12);
        let fy = (y - y0) / (y1 - y0).max(1e-12);
        (if right { fx > 0.6 } else { fx < 0.4 }) && (if upper { fy > 0.6 } else { fy < 0.4 })
    };
    corners
        .into_iter()
        .min_by_key(|&(_, right, upper)| series.iter().flat_map(|s| s.1.iter()).filter(|p| inside(p, right, upper)).count())
        .map(|c| c.0)
        .unwrap_or(SeriesLabelPosition::UpperRight)
}

/// `DIR/NAME.{png,svg}`: line series against x.
pub fn line_chart(
    dir: &Path,
    name: &str,
    title: &str,
    axes: (&str, &str),
    series: &[Series],
) -> Result<Vec<PathBuf>> {
    both(
        dir,
        name,
        (900, 420),
        &|a| lines(a, title, axes, series),
        &|a| lines(a, title, axes, series),
    )
}
