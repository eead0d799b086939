//! `gpu-train predict`: load a snapshot and classify images, printing the SoftMax table for
//! each (class, logit, exponential, probability), as the chapter's Figure 3-2 does.
//!
//! Images come from the test set (by index) or from PNG files of 28×28 grey digits, drawn as
//! MNIST draws them: a light digit on a black background. With `--show` each image is also
//! drawn in text, 28 lines of 28 characters, so a misread digit can be seen beside its table.

use crate::cpu::reference::{self, Params};
use crate::data::{scale_pixel, Dataset, CLASSES, PIXELS};
use crate::error::{Error, Result};
use crate::explain::chapter3::softmax_table;
use crate::model::Model;
use std::path::Path;

/// The logits of one image (u8 pixels) under `model`, computed with the f64 reference.
pub fn logits(model: &Model, pixels: &[u8]) -> Vec<f64> {
    let x: Vec<f64> = pixels.iter().map(|&p| scale_pixel(p) as f64).collect();
    let y = vec![0.0; CLASSES];
    reference::forward(&Params::from_model(model), &x, &y, 1).z2
}

/// Reads a 28×28 PNG as 784 grey u8 pixels (colour is averaged to grey, alpha ignored).
pub fn read_png(path: &Path) -> Result<Vec<u8>> {
    let bad = |fault: String| Error::bad_data(path.display().to_string(), fault);
    let file = crate::files::open_input(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    // Expand palettes and bit depths below 8, strip 16-bit to 8: every pixel becomes u8 channels.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    // The header's size is checked before a pixel is decoded: a 129-byte file can claim
    // 100000×100000 pixels, and decoding it would allocate 40 GB.
    decoder.set_limits(png::Limits { bytes: 1 << 20 });
    let mut reader = decoder.read_info().map_err(|e| match e {
        png::DecodingError::LimitsExceeded => {
            bad("image is far larger than 28x28 (the model takes 28x28 grey digits)".into())
        }
        e => bad(format!("not a readable PNG: {e}")),
    })?;
    let (w, h) = (reader.info().width, reader.info().height);
    if (w, h) != (28, 28) {
        return Err(bad(format!(
            "image is {w}x{h}, the model takes 28x28 grey digits"
        )));
    }
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("not a readable PNG: {e}")))?;
    if (info.width, info.height) != (28, 28) {
        return Err(bad(format!(
            "image is {}x{}, the model takes 28x28 grey digits",
            info.width, info.height
        )));
    }
    let channels = info.color_type.samples();
    let colour = match info.color_type {
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => 1,
        _ => 3,
    };
    let pixels: Vec<u8> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|px| (px[..colour].iter().map(|&v| v as u32).sum::<u32>() / colour as u32) as u8)
        .collect();
    debug_assert_eq!(pixels.len(), PIXELS);
    Ok(pixels)
}

/// The characters of [`ascii`], from black (0) to white (255): ten steps of intensity.
pub const RAMP: &[u8; 10] = b" .:-=+*#%@";

/// A 28×28 image as 28 lines of 28 characters, one per pixel, darker to lighter along
/// [`RAMP`] (a light digit on black, as MNIST draws them, shows as `@` strokes on blanks).
pub fn ascii(pixels: &[u8]) -> String {
    const SIDE: usize = 28;
    debug_assert_eq!(SIDE * SIDE, PIXELS);
    let mut s = String::with_capacity(PIXELS + SIDE);
    for row in pixels.chunks(SIDE) {
        for &p in row {
            s.push(RAMP[p as usize * RAMP.len() / 256] as char);
        }
        s.push('\n');
    }
    s
}

/// The report for one image: its name, its drawing when `show`, its SoftMax table.
pub fn describe(
    model: &Model,
    name: &str,
    pixels: &[u8],
    label: Option<usize>,
    show: bool,
) -> String {
    let z = logits(model, pixels);
    let mut s = format!(
        "{name}{}\n",
        label
            .map(|l| format!(" (true class {l})"))
            .unwrap_or_default()
    );
    if show {
        s += &ascii(pixels);
    }
    s += &softmax_table(&z, label);
    s
}

/// What `predict` classifies: test images by index, PNG files, and whether to draw each.
pub struct Images<'a> {
    /// The test images read (up to the highest index asked for).
    pub test: &'a Dataset,
    pub indices: &'a [usize],
    /// 28×28 PNG files, read only.
    pub files: &'a [std::path::PathBuf],
    /// Draw each image in text above its table ([`ascii`]).
    pub show: bool,
}

/// Classifies `images` with the weights in `snapshot` (a gpu-train snapshot or any
/// safetensors file with the four tensors, see [`crate::weights`]).
pub fn run(snapshot: &Path, images: &Images) -> Result<String> {
    if images.indices.is_empty() && images.files.is_empty() {
        return Err(Error::Config(
            "predict: give --index N (test images) or --image-file FILE.png".into(),
        ));
    }
    let loaded = crate::weights::load(snapshot)?;
    let model = loaded.model.clone();
    let mut out = loaded.describe(snapshot) + "\n";
    let test = images.test;
    for &i in images.indices {
        if i >= test.len() {
            return Err(Error::Config(format!(
                "--index {i} is out of range: the test set has {} images",
                test.len()
            )));
        }
        out += &describe(
            &model,
            &format!("test image {i}"),
            test.image(i),
            Some(test.labels[i] as usize),
            images.show,
        );
    }
    for p in images.files {
        let pixels = read_png(p)?;
        out += &describe(&model, &p.display().to_string(), &pixels, None, images.show);
    }
    Ok(out)
}
