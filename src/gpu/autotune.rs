//! Choosing the matmul variant for an adapter by measuring, as Burn's autotune does.
//!
//! The variants in [`MATMUL_VARIANTS`] compute the same sums; which is fastest depends on the
//! adapter (16×16 workgroup-memory tiles win on a big GPU, 8×4 register blocks on lavapipe,
//! where the "GPU" is the CPU's SIMD lanes). At start-up each variant runs the model's two
//! large products at batch 64 (the hidden layer's forward product and its weight gradient) and
//! the fastest is kept. The choice is remembered for the process (so every replica of a run
//! uses the same kernels and gets the same bits) and on disk, per adapter, driver and
//! gpu-train version, in `$XDG_CACHE_HOME/gpu-train/matmul-variants.tsv` (or
//! `~/.cache/gpu-train/`), so later runs start at once. `--kernels NAME` skips all of this.

use super::kernels::{
    self, row_major, storage, transposed, Dispatch, MatmulParams, MatmulVariant, MATMUL_VARIANTS,
};
use super::Gpu;
use crate::data::PIXELS;
use crate::error::Result;
use crate::model::HIDDEN;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// What was chosen and how, for the engine line.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub variant: &'static MatmulVariant,
    pub how: String,
    /// Seconds the chosen variant took for the two products (None with --kernels).
    pub seconds: Option<f64>,
}

/// Seconds this machine's CPU path (matrixmultiply's sgemm, the CPU trainer's) takes for the
/// same two products at batch 64 on one thread, the least of a few runs: beside a software
/// adapter's time it says how much slower the "GPU" is than `--cpu` here.
pub fn cpu_seconds() -> f64 {
    let (b, hid, pix) = (64usize, HIDDEN, PIXELS);
    let x = vec![0.25f32; b * pix];
    let w1 = vec![0.25f32; hid * pix];
    let dh = vec![0.25f32; b * hid];
    let mut h = vec![0.0f32; b * hid];
    let mut g = vec![0.0f32; hid * pix];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        // SAFETY: every slice holds the rows × columns its strides describe.
        unsafe {
            // h = x · W1ᵀ: (64×784)·(784×128).
            matrixmultiply::sgemm(
                b,
                pix,
                hid,
                1.0,
                x.as_ptr(),
                pix as isize,
                1,
                w1.as_ptr(),
                1,
                pix as isize,
                0.0,
                h.as_mut_ptr(),
                hid as isize,
                1,
            );
            // ∂W1 = δ1ᵀ · x: (128×64)·(64×784).
            matrixmultiply::sgemm(
                hid,
                b,
                pix,
                1.0,
                dh.as_ptr(),
                1,
                hid as isize,
                x.as_ptr(),
                pix as isize,
                1,
                0.0,
                g.as_mut_ptr(),
                pix as isize,
                1,
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box((&h, &g));
    best
}

/// The cache key: adapter, backend, driver, and this build's kernels.
fn key(gpu: &Gpu) -> String {
    let i = &gpu.info;
    let mut h = crc32fast::Hasher::new();
    for v in &MATMUL_VARIANTS {
        h.update(v.name.as_bytes());
        h.update(v.source.as_bytes());
        h.update(&[v.unchecked as u8]);
    }
    format!(
        "{} | {:?} | {} {} | gpu-train {} | kernels {:08x}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        env!("CARGO_PKG_VERSION"),
        h.finalize()
    )
    .replace(['\t', '\n'], " ")
}

/// The cache file, where a home for it exists.
pub fn cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("gpu-train").join("matmul-variants.tsv"))
}

/// The cache holds one line per adapter, driver and CPU met: a file longer than this is not
/// ours, and is not read.
const MAX_CACHE_BYTES: u64 = 1 << 20;

fn read_cache(key: &str) -> Option<(&'static MatmulVariant, String)> {
    let text = crate::files::read_input_text(&cache_file()?, MAX_CACHE_BYTES).ok()?;
    text.lines().rev().find_map(|line| {
        let mut parts = line.splitn(3, '\t');
        if parts.next()? != key {
            return None;
        }
        let v = MatmulVariant::by_name(parts.next()?).ok()?;
        Some((v, parts.next().unwrap_or("").to_string()))
    })
}

/// Appends the choice to the cache (best effort: a read-only home only costs a re-measure).
fn write_cache(key: &str, variant: &str, details: &str) {
    let Some(path) = cache_file() else { return };
    let mut lines: Vec<String> = crate::files::read_input_text(&path, MAX_CACHE_BYTES)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with(&format!("{key}\t")))
        .map(String::from)
        .collect();
    lines.push(format!("{key}\t{variant}\t{details}"));
    let written = path
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .map_err(|e| e.to_string())
        .and_then(|_| {
            crate::checkpoint::write_file(
                &path,
                (lines.join("\n") + "\n").as_bytes(),
                "the kernel cache",
                "the earlier cache is untouched",
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        log::info!(
            "could not cache the matmul choice in {}: {e}",
            path.display()
        );
    }
}

/// Seconds one run of `d` takes: the least of several, after a warm-up.
fn time(gpu: &Gpu, d: &Dispatch) -> Result<f64> {
    kernels::run_now(gpu, &[d])?;
    let mut best = f64::INFINITY;
    let start = Instant::now();
    for _ in 0..10 {
        let t = Instant::now();
        kernels::run_now(gpu, &[d])?;
        best = best.min(t.elapsed().as_secs_f64());
        if start.elapsed().as_secs_f64() > 0.2 {
            break;
        }
    }
    Ok(best)
}

/// Seconds `variant` takes for the hidden layer's forward product and weight gradient, batch 64.
pub fn measure(gpu: &Gpu, variant: &'static MatmulVariant) -> Result<f64> {
    let d = &gpu.device;
    let pipeline = kernels::matmul_pipeline(d, variant);
    let (b, hid, pix) = (64u32, HIDDEN as u32, PIXELS as u32);
    let buf = |n: u32| storage(d, "autotune", &vec![0.25f32; n as usize]);
    let splits = variant.forward_splits(b as usize, HIDDEN, PIXELS);
    let (x, w1, b1, mask, h, dh) = (
        buf(b * pix),
        buf(hid * pix),
        buf(hid),
        buf(hid * pix),
        buf(splits * b * hid),
        buf(b * hid),
    );
    let forward = MatmulParams::new(
        (b, hid, pix),
        row_major(pix),
        transposed(pix),
        1.0,
        0.0,
        kernels::HAS_BIAS | kernels::RELU,
        splits,
    );
    let grad = MatmulParams::new(
        (hid, pix, b),
        transposed(hid),
        row_major(pix),
        1.0,
        0.0,
        0,
        1,
    );
    let mut total = 0.0;
    for (p, a, bb, c) in [(forward, &x, &w1, &h), (grad, &dh, &x, &w1)] {
        let dispatch = Dispatch::new(
            d,
            variant.name,
            &pipeline,
            &[
                a.as_entire_binding(),
                bb.as_entire_binding(),
                b1.as_entire_binding(),
                mask.as_entire_binding(),
                c.as_entire_binding(),
            ],
            &p,
            variant.workgroups(&p),
        );
        total += time(gpu, &dispatch)?;
    }
    gpu.check()?;
    Ok(total)
}

/// The variant for `gpu`: `forced` by name, else remembered, cached or measured.
pub fn choose(gpu: &Gpu, forced: Option<&str>) -> Result<Choice> {
    if let Some(name) = forced {
        return Ok(Choice {
            variant: MatmulVariant::by_name(name)?,
            how: "chosen with --kernels".into(),
            seconds: None,
        });
    }
    static CHOSEN: OnceLock<Mutex<HashMap<String, Choice>>> = OnceLock::new();
    let memo = CHOSEN.get_or_init(Default::default);
    let key = key(gpu);
    // Held while measuring: replicas opened at once wait for the first's answer.
    let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = memo.get(&key) {
        return Ok(c.clone());
    }
    let choice = if let Some((variant, details)) = read_cache(&key) {
        // The chosen variant's time, from its "name N µs" in the details.
        let seconds = details
            .split(", ")
            .find_map(|d| d.strip_prefix(&format!("{} ", variant.name)))
            .and_then(|t| t.trim_end_matches(" µs").parse::<f64>().ok())
            .map(|us| us * 1e-6);
        Choice {
            variant,
            how: format!("measured earlier: {details}"),
            seconds,
        }
    } else {
        let mut times = Vec::new();
        for v in &MATMUL_VARIANTS {
            times.push((v, measure(gpu, v)?));
        }
        let best = times
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("variants")
            .0;
        let details = times
            .iter()
            .map(|(v, t)| format!("{} {:.0} µs", v.name, t * 1e6))
            .collect::<Vec<_>>()
            .join(", ");
        write_cache(&key, best.name, &details);
        let seconds = times.iter().find(|(v, _)| v.name == best.name).map(|t| t.1);
        Choice {
            variant: best,
            how: format!("measured now: {details} for the hidden layer's two products"),
            seconds,
        }
    };
    memo.insert(key, choice.clone());
    Ok(choice)
}
