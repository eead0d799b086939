//! The search's memory on disk: one line per (adapter, driver, CPU, shapes, build; product;
//! variant) measured, so a later run starts at once and goes on where the last search stopped.

use crate::gpu::matmul::{matmul_variants, MatmulVariant};
use crate::abi::Site;
use super::super::context::Gpu;
use crate::engine::Precision;
use std::collections::HashMap;
use std::path::PathBuf;

/// The CPU's model, as /proc/cpuinfo names it (a software adapter's speed is the CPU's).
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    // llvmpipe generates code for the CPU's features less any these variables mask off
    // (GALLIUM_OVERRIDE_CPU_CAPS=avx: no AVX-512), so they are part of "the CPU" here.
    let masked: String = ["GALLIUM_OVERRIDE_CPU_CAPS", "LP_NATIVE_VECTOR_WIDTH"]
        .iter()
        .filter_map(|v| Some(format!(" {v}={}", std::env::var(v).ok()?)))
        .collect();
    format!(
        "{} family {} model {}{masked}",
        field("model name"),
        field("cpu family"),
        field("model")
    )
}

/// The cache key: adapter, backend, driver, CPU, the step's shapes and precision, and this
/// build's kernels.
pub(super) fn key(gpu: &Gpu, rows: u32, hidden: u32, precision: Precision) -> String {
    let i = &gpu.info;
    let mut h = crc32fast::Hasher::new();
    for v in matmul_variants() {
        h.update(v.name.as_bytes());
        h.update(v.wgsl().as_bytes());
        h.update(&[v.unchecked as u8]);
    }
    format!(
        "{} | {:?} | {} {} | {} | rows {rows} hidden {hidden} {precision:?} | gpu-train {} | kernels {:08x}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        cpu_model(),
        env!("CARGO_PKG_VERSION"),
        h.finalize()
    )
    .replace(['\t', '\n'], " ")
}

/// The cache file, where a home for it exists.
fn cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("gpu-train").join("matmul-picks.tsv"))
}

/// The cache holds one line per adapter, driver, CPU and shape met: a file longer than this
/// is not ours, and is not read.
const MAX_CACHE_BYTES: u64 = 1 << 20;

/// What the cache knows for one key: each (site, variant) measured, with its seconds, or
/// None where the variant failed the twin check.
pub(super) type Measured = HashMap<(Site, &'static str), Option<f64>>;

/// The cache's lines for `key`: "key \t site \t variant \t µs" (or "wrong").
pub(super) fn read_cache(key: &str) -> Measured {
    let mut known = Measured::new();
    let Some(path) = cache_file() else {
        return known;
    };
    let text = crate::files::read_input_text(&path, MAX_CACHE_BYTES).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(site), Ok(v)) = (
            Site::ALL.into_iter().find(|s| f.get(1) == Some(&s.name())),
            MatmulVariant::by_name(f.get(2).unwrap_or(&"")),
        ) else {
            continue;
        };
        if f.len() != 4 || f[0] != key {
            continue;
        }
        // µs as written, or "wrong"; anything else (a negative, NaN or infinite time) is not
        // a measurement, and is measured again.
        let seconds = match f[3] {
            "wrong" => None,
            t => match t.parse::<f64>() {
                Ok(us) if us.is_finite() && us > 0.0 => Some(us * 1e-6),
                _ => continue,
            },
        };
        known.insert((site, v.name), seconds);
    }
    known
}

/// Appends measurements to the cache (best effort: a read-only home only costs a re-measure).
pub(super) fn write_cache(key: &str, new: &[(Site, &'static str, Option<f64>)]) {
    let Some(path) = cache_file() else { return };
    // A file that cannot be read as the cache (longer than it grows in ordinary use: mostly
    // lines of older builds; or not text) is started afresh: it is only a cache. (write_file
    // never writes through a link, a device node or a FIFO.)
    let mut text = crate::files::read_input_text(&path, MAX_CACHE_BYTES).unwrap_or_default();
    for (site, v, seconds) in new {
        let value = seconds.map_or("wrong".to_string(), |s| format!("{:.1}", s * 1e6));
        text += &format!("{key}\t{}\t{v}\t{value}\n", site.name());
    }
    let written = path
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .map_err(|e| e.to_string())
        .and_then(|_| {
            crate::files::write_file(
                &path,
                text.as_bytes(),
                "the kernel cache",
                "the earlier cache is untouched",
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        log::info!(
            "could not cache the matmul timings in {}: {e}",
            path.display()
        );
    }
}
