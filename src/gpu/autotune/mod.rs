//! Choosing a matmul variant for each product of the step by measuring, as Burn's autotune
//! and tinygrad's BEAM search do.
//!
//! The variants (gpu/matmul.rs, gpu/variants.rs) compute the same sums; which is fastest
//! depends on the adapter and on the product: 16×16 workgroup-memory tiles win on a big GPU;
//! on lavapipe, where the "GPU" is the CPU's SIMD lanes, register blocks with vec4 loads and
//! rows shared through subgroups win, and the best shape differs between the forward product
//! (K = 784, both operands contiguous along K) and the weight product (K = the batch, contiguous
//! along M and N). So each of the step's two products ([`Site`]) gets its own pick:
//!
//! 1. the candidates are the variants offered on this adapter (CPU-tuned ones only on CPU
//!    adapters, subgroup ones only with 8-lane subgroups) that can compute the product;
//! 2. each runs the product once on random inputs and is compared with the CPU twin
//!    (`cpu::twins::matmul`): a variant that gets a sum wrong here is never picked;
//! 3. each is timed briefly, and the three fastest again, longer: the fastest of those wins.
//!
//! The picks are remembered for the process (every replica of a run gets the same kernels, so
//! the same bits) and on disk, per adapter, driver, CPU model, batch and hidden size and this
//! build's kernels, in `$XDG_CACHE_HOME/gpu-train/matmul-picks.tsv` (or `~/.cache/gpu-train/`),
//! so later runs start at once. `--kernels NAME` skips all of this.

mod bench;
mod cache;

use super::kernels;
use crate::gpu::matmul::{matmul_variants, software_family, MatmulVariant};
use crate::abi::{Elems, MatmulParams, Site, SITES};
use super::mirror::Mirror;
use super::context::Gpu;
use crate::data::PIXELS;
use crate::engine::Precision;
use crate::error::{Error, Result};
use bench::Bench;
use cache::{key, read_cache, write_cache, Measured};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// One product's variant, and the seconds it took (None when not measured).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub variant: &'static MatmulVariant,
    pub seconds: Option<f64>,
}

/// What was chosen for each [`Site`] and how, for the engine line.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub picks: [Pick; SITES],
    pub how: String,
}

impl Choice {
    /// Each site's variant, in [`Site`] order.
    pub fn variants(&self) -> [&'static MatmulVariant; SITES] {
        self.picks.map(|p| p.variant)
    }

    /// Seconds of the two large products (x·W1ᵀ and δ1ᵀ·x), as [`cpu_seconds`] times them.
    pub fn large_products_seconds(&self) -> Option<f64> {
        let s = |site: Site| self.picks[site as usize].seconds;
        Some(s(Site::Hidden)? + s(Site::GradW1)?)
    }

    /// What sets the arithmetic's rounding: the variants that never split K all add each sum
    /// one k at a time in order (the same bits, whichever is picked); otherwise each
    /// product's name.
    pub fn names(&self) -> String {
        if self.picks.iter().all(|p| p.variant.max_splits == 1) {
            // (Under f16 too: reg8x4's f16 siblings. The text is kept as older snapshots have it.)
            return "sums in k order (reg8x4 and the generated family)".into();
        }
        Site::ALL
            .iter()
            .map(|&site| format!("{} {}", site.name(), self.picks[site as usize].variant.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "x·W1ᵀ k4_16x8_sg 1.41 ms, δ1ᵀ·x tmn4_16x8_sg 2.19 ms" for the engine line.
    pub fn describe(&self) -> String {
        Site::ALL
            .iter()
            .map(|&site| {
                let p = &self.picks[site as usize];
                match p.seconds {
                    Some(s) => format!("{} {} {:.2} ms", site.name(), p.variant.name, s * 1e3),
                    None => format!("{} {}", site.name(), p.variant.name),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Seconds this machine's CPU path (matrixmultiply's sgemm, the CPU trainer's) takes for the
/// same two large products (x·W1ᵀ and δ1ᵀ·x) at `rows` images and `hidden` neurons on one
/// thread, the least of a few runs: beside a software adapter's time it says how much slower
/// the "GPU" is than `--cpu` here.
pub fn cpu_seconds(rows: usize, hidden: usize) -> f64 {
    let (b, hid, pix) = (rows, hidden, PIXELS);
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

/// The step a search is for: the training batch's rows, the hidden width and the precision.
#[derive(Debug, Clone, Copy)]
struct Step {
    rows: u32,
    hidden: u32,
    precision: Precision,
}

impl Step {
    /// `site`'s product in this step (shape and layout; alpha and beta do not matter here).
    fn params(&self, site: Site) -> MatmulParams {
        site.params(self.rows, self.hidden, (1.0, 0.0), 1)
    }
}

/// Whether `v` can compute `site`'s product in `step` in the engine: it reads and writes the
/// step's elements there and fits the product, and where it reads texture mirrors, the
/// engine's mirrors (of x and δ1 with the test pass's rows too, and of W1) fit the adapter's
/// largest texture.
fn usable(gpu: &Gpu, v: &MatmulVariant, site: Site, step: Step) -> bool {
    let fit = |floats: usize| Mirror::fits(&gpu.limits, floats);
    let x_rows = (step.rows as usize).max(crate::engine::EVAL_BATCH);
    let hidden = step.hidden as usize;
    v.fits_at(site, step.precision, &step.params(site))
        && (!v.textures.contains(&true)
            || [PIXELS, hidden].iter().all(|&cols| fit(x_rows * cols)) && fit(hidden * PIXELS))
}

/// The variant for `site` when nothing is measured: of the hand-written ones that read and
/// write the step's elements there, the one made for this kind of adapter (f32: reg8x4 on a
/// CPU adapter, tiled16 on a GPU; f16: reg8x4's f16 sibling on both).
fn fallback(gpu: &Gpu, site: Site, step: Step) -> &'static MatmulVariant {
    let p = step.params(site);
    let fixed: Vec<&'static MatmulVariant> = crate::gpu::matmul::fixed_variants()
        .iter()
        .filter(|v| v.offered_on(gpu) && v.fits_at(site, step.precision, &p))
        .collect();
    let own_kind = fixed.iter().find(|v| v.software == software_family(gpu));
    own_kind
        .or(fixed.first())
        .expect("a hand-written variant for every product")
}

/// Seconds of search one start-up may spend (GPU_TRAIN_SEARCH_SECONDS overrides): a cold
/// compile of one variant on lavapipe takes 0.2-2.6 s, so a first run measures a few, and each
/// later run goes on from where the last stopped until every variant is measured.
fn budget() -> f64 {
    let Ok(text) = std::env::var("GPU_TRAIN_SEARCH_SECONDS") else {
        return 2.0;
    };
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => v,
        _ => {
            log::warn!(
                "GPU_TRAIN_SEARCH_SECONDS={text} is not a number of seconds (0 or more): searching 2 s"
            );
            2.0
        }
    }
}

/// A search's new measurements (site, variant, seconds or None where wrong).
type Measurements = Vec<(Site, &'static str, Option<f64>)>;

/// Measures the offered variants not yet in `known`, in the family's order (then the
/// hand-written ones: the fallback, tiled16 last on a CPU adapter), until the time budget is
/// spent; each variant is compiled once and measured on every product it fits. Returns the new
/// measurements and the (site, variant) pairs left for a later run.
fn search(gpu: &Gpu, step: Step, known: &Measured) -> Result<(Measurements, usize)> {
    let start = Instant::now();
    let base = fallback(gpu, Site::Hidden, step);
    let mut order: Vec<&'static MatmulVariant> = matmul_variants()
        .iter()
        .filter(|v| v.offered_on(gpu))
        .collect();
    // The family in its order of likely winners, then the fallback, tiled16 last: a cold
    // compile is most of a candidate's cost, so the first seconds go to the likeliest.
    let software = software_family(gpu);
    order.sort_by_key(|v| (v.software != software, v.base == base.base));
    let mut benches: Vec<Option<Bench>> = Site::ALL.iter().map(|_| None).collect();
    let (mut new, mut left, mut tried, mut dearest) = (Vec::new(), 0, 0, 0f64);
    for v in order {
        let todo: Vec<Site> = Site::ALL
            .into_iter()
            .filter(|&s| usable(gpu, v, s, step))
            .filter(|&s| !known.contains_key(&(s, v.name)))
            .collect();
        if todo.is_empty() {
            continue;
        }
        // A candidate is started only if the dearest before it (mostly a cold compile) would
        // still fit in the budget, so that a search ends within it rather than one compile past
        // it; the first always runs. A product left unmeasured runs the fallback.
        let spent = start.elapsed().as_secs_f64();
        if tried > 0 && spent + dearest > budget() {
            left += todo.len();
            continue;
        }
        tried += 1;
        let began = Instant::now();
        let pipeline = (v, kernels::matmul_pipeline(&gpu.device, v));
        for site in todo {
            let bench = benches[site as usize].get_or_insert_with(|| {
                Bench::new(
                    gpu,
                    (site, step.precision),
                    (step.rows, step.hidden),
                    7 + site as u64,
                )
            });
            // The first run compiles (lavapipe compiles at first use) and is checked.
            let checking = Instant::now();
            let right = bench.matches_twin(gpu, &pipeline)?;
            let checked = checking.elapsed().as_secs_f64();
            let seconds = match right {
                true => Some(bench.time(gpu, &pipeline)?),
                false => None,
            };
            log::debug!(
                "search: {} on {}: {seconds:?} (first dispatch and check {checked:.2} s)",
                v.name,
                site.name()
            );
            new.push((site, v.name, seconds));
        }
        dearest = dearest.max(began.elapsed().as_secs_f64());
    }
    gpu.check()?;
    Ok((new, left))
}

/// Each site's fastest measured variant (the fallback where none is measured).
fn picks_from(gpu: &Gpu, step: Step, known: &Measured) -> [Pick; SITES] {
    Site::ALL.map(|site| {
        let best = matmul_variants()
            .iter()
            .filter(|v| v.offered_on(gpu) && usable(gpu, v, site, step))
            .filter_map(|v| Some((v, (*known.get(&(site, v.name))?)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((variant, s)) => Pick {
                variant,
                seconds: Some(s),
            },
            None => Pick {
                variant: fallback(gpu, site, step),
                seconds: None,
            },
        }
    })
}

/// `--kernels NAME`: that shape (in the step's precision) on every product it can compute,
/// the fallback elsewhere.
fn forced(gpu: &Gpu, name: &str, step: Step) -> Result<Choice> {
    let v = MatmulVariant::by_name(name)?;
    if v.subgroup8 && !gpu.has_subgroups_of(8) {
        return Err(Error::Config(format!(
            "--kernels {name} shares rows through subgroups of 8 lanes, which {} lacks",
            gpu.info.name
        )));
    }
    if Site::ALL
        .iter()
        .all(|&site| v.sibling(site.elems(step.precision)).is_none())
    {
        let shapes: Vec<&str> = matmul_variants()
            .iter()
            .filter(|s| s.elems == Elems::F16 || s.elems == Elems::F16ToF32)
            .map(|s| s.base)
            .fold(Vec::new(), |mut names, b| {
                if !names.contains(&b) {
                    names.push(b);
                }
                names
            });
        return Err(Error::Config(format!(
            "--kernels {name} has no f16 version for --precision f16; the shapes that have one are {}",
            shapes.join(", ")
        )));
    }
    let picks = Site::ALL.map(|site| {
        let sibling = v.sibling(site.elems(step.precision));
        Pick {
            variant: match sibling.filter(|s| usable(gpu, s, site, step)) {
                Some(s) => s,
                None => fallback(gpu, site, step),
            },
            seconds: None,
        }
    });
    Ok(Choice {
        picks,
        how: "chosen with --kernels where it fits".into(),
    })
}

/// Each product's variant for `gpu` at `rows` images and `hidden` neurons in a step of
/// `precision`: `forced` by name (wherever it can compute the product), else remembered,
/// cached or searched.
pub fn choose(
    gpu: &Gpu,
    forced_name: Option<&str>,
    (rows, hidden): (u32, u32),
    precision: Precision,
) -> Result<Choice> {
    let step = Step {
        rows,
        hidden,
        precision,
    };
    if let Some(name) = forced_name {
        return forced(gpu, name, step);
    }
    static CHOSEN: OnceLock<Mutex<HashMap<String, Choice>>> = OnceLock::new();
    let memo = CHOSEN.get_or_init(Default::default);
    let key = key(gpu, rows, hidden, precision);
    // Held while measuring: replicas opened at once wait for the first's answer.
    let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = memo.get(&key) {
        return Ok(c.clone());
    }
    let mut known = read_cache(&key);
    let t = Instant::now();
    let (new, left) = search(gpu, step, &known)?;
    let spent = t.elapsed().as_secs_f64();
    write_cache(&key, &new);
    let wrong: Vec<String> = new
        .iter()
        .filter(|m| m.2.is_none())
        .map(|(s, v, _)| format!("{v} on {}", s.name()))
        .collect();
    let fresh = new.len();
    known.extend(new.into_iter().map(|(s, v, t)| ((s, v), t)));
    let mut how = match (fresh, left) {
        (0, _) => format!("searched earlier: {} kernel/product pairs timed", known.len()),
        (_, 0) => format!(
            "searched: {fresh} kernel/product pairs timed now in {spent:.1} s, {} in all",
            known.len()
        ),
        _ => format!(
            "searched: {fresh} kernel/product pairs timed now in {spent:.1} s, {left} left for later runs"
        ),
    };
    if !wrong.is_empty() {
        how += &format!(
            "; wrong against the CPU twin, never picked: {}",
            wrong.join(", ")
        );
    }
    let choice = Choice {
        picks: picks_from(gpu, step, &known),
        how,
    };
    memo.insert(key, choice.clone());
    Ok(choice)
}
