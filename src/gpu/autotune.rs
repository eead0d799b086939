//! Choosing a matmul variant for each product of the step by measuring, as Burn's autotune
//! and tinygrad's BEAM search do.
//!
//! The variants (gpu/kernels.rs, gpu/variants.rs) compute the same sums; which is fastest
//! depends on the adapter and on the product: 16×16 workgroup-memory tiles win on a big GPU;
//! on lavapipe, where the "GPU" is the CPU's SIMD lanes, register blocks with vec4 loads and
//! rows shared through subgroups win, and the best shape differs between the forward product
//! (K = 784, both operands contiguous along K) and the weight product (K = the batch, contiguous
//! along M and N). So each of the step's five products ([`Site`]) gets its own pick:
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

use super::kernels::{
    self, matmul_variants, storage, Dispatch, MatmulParams, MatmulVariant, Site, SITES,
};
use super::mirror::Mirror;
use super::Gpu;
use crate::data::PIXELS;
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::PathBuf;
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

    /// What sets the arithmetic's rounding: the CPU-adapter variants all add each sum one k
    /// at a time in order (the same bits, whichever is picked); otherwise each product's name.
    pub fn names(&self) -> String {
        if self.picks.iter().all(|p| p.variant.software) {
            return "sums in k order (reg8x4 and the generated family)".into();
        }
        Site::ALL
            .iter()
            .map(|&site| format!("{} {}", site.name(), self.picks[site as usize].variant.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "x·W1ᵀ k4_16x8_sg 1.41 ms, h·W2ᵀ ..." for the engine line.
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

/// The cache key: adapter, backend, driver, CPU, the step's shapes and this build's kernels.
fn key(gpu: &Gpu, rows: u32, hidden: u32) -> String {
    let i = &gpu.info;
    let mut h = crc32fast::Hasher::new();
    for v in matmul_variants() {
        h.update(v.name.as_bytes());
        h.update(v.source.as_bytes());
        h.update(&[v.unchecked as u8]);
    }
    format!(
        "{} | {:?} | {} {} | {} | rows {rows} hidden {hidden} | gpu-train {} | kernels {:08x}",
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
pub fn cache_file() -> Option<PathBuf> {
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
type Measured = HashMap<(Site, &'static str), Option<f64>>;

/// The cache's lines for `key`: "key \t site \t variant \t µs" (or "wrong").
fn read_cache(key: &str) -> Measured {
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
        let seconds = f[3].parse::<f64>().ok().map(|us| us * 1e-6);
        known.insert((site, v.name), seconds);
    }
    known
}

/// Appends measurements to the cache (best effort: a read-only home only costs a re-measure).
fn write_cache(key: &str, new: &[(Site, &'static str, Option<f64>)]) {
    let Some(path) = cache_file() else { return };
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
            crate::checkpoint::write_file(
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

/// One product on random inputs, bound and ready to dispatch with any variant.
struct Bench {
    site: Site,
    params: MatmulParams,
    inputs: [Vec<f32>; 4],
    buffers: [wgpu::Buffer; 5],
    /// Texture mirrors of A and B, where the engine keeps them for this product, with the
    /// floats each holds.
    mirrors: [Option<(Mirror, usize)>; 2],
}

impl Bench {
    /// The product at `site` for `rows` images and `hidden` neurons, with room for every
    /// variant's K-slices; weight products in their fused-update form (alpha −lr, beta 1).
    fn new(gpu: &Gpu, site: Site, rows: u32, hidden: u32, seed: u64) -> Bench {
        let params = site.params(rows, hidden, (-0.01, 1.0), 1);
        let (m, n, k) = (params.m as usize, params.n as usize, params.k as usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut random =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
        // A and B as the strides read them (their largest index + 1, rounded up to vec4s).
        let a_len = ((m - 1) * params.a_rs as usize + (k - 1) * params.a_cs as usize + 1)
            .next_multiple_of(4);
        let b_len = ((k - 1) * params.b_rs as usize + (n - 1) * params.b_cs as usize + 1)
            .next_multiple_of(4);
        let inputs = [random(a_len), random(b_len), random(n), random(m * n)];
        let c = random(16 * m * n);
        let d = &gpu.device;
        let buffers = [
            storage(d, "search A", &inputs[0]),
            storage(d, "search B", &inputs[1]),
            storage(d, "search bias", &inputs[2]),
            storage(d, "search mask", &inputs[3]),
            storage(d, "search C", &c),
        ];
        let mirrors = [(0, a_len), (1, b_len)]
            .map(|(i, len)| site.mirrored()[i].map(|_| (Mirror::of(gpu, &buffers[i], len), len)));
        Bench {
            site,
            params,
            inputs,
            buffers,
            mirrors,
        }
    }

    fn dispatch(&self, gpu: &Gpu, v: &(&'static MatmulVariant, wgpu::ComputePipeline)) -> Dispatch {
        let mut p = self.params;
        if matches!(self.site, Site::Hidden | Site::Output) {
            // Forward products are timed with the K-slices the step would give them.
            let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
            p = MatmulParams::new(
                (p.m, p.n, p.k),
                (p.a_rs, p.a_cs),
                (p.b_rs, p.b_cs),
                p.alpha,
                p.beta,
                p.flags,
                v.0.forward_splits(m, n, k),
            );
        }
        let res = self.buffers.each_ref().map(|b| b.as_entire_binding());
        Dispatch::matmul(&gpu.device, "search", v, res, self.mirrors(), &p)
    }

    fn mirrors(&self) -> [Option<&Mirror>; 2] {
        self.mirrors.each_ref().map(|m| m.as_ref().map(|m| &m.0))
    }

    /// Seconds variant `v` takes for this product, with the copies into the mirrors it reads,
    /// which a step pays for too.
    fn time(&self, gpu: &Gpu, v: &(&'static MatmulVariant, wgpu::ComputePipeline)) -> Result<f64> {
        let copies: Vec<(&Mirror, &wgpu::Buffer, usize)> = (0..2)
            .filter(|&i| v.0.textures[i])
            .filter_map(|i| {
                let (mirror, floats) = self.mirrors[i].as_ref()?;
                Some((mirror, &self.buffers[i], *floats))
            })
            .collect();
        time(gpu, &self.dispatch(gpu, v), &copies)
    }

    /// Whether `v` computes this product as the CPU twin does (unsplit, epilogue and all).
    fn matches_twin(
        &self,
        gpu: &Gpu,
        v: &(&'static MatmulVariant, wgpu::ComputePipeline),
    ) -> Result<bool> {
        let d = &gpu.device;
        let c0: Vec<f32> = (0..self.params.m * self.params.n)
            .map(|i| (i % 7) as f32 * 0.25)
            .collect();
        let c = storage(d, "search twin C", &c0);
        let [a, b, bias, mask, _] = self.buffers.each_ref().map(|b| b.as_entire_binding());
        let dispatch = Dispatch::matmul(
            d,
            "twin check",
            v,
            [a, b, bias, mask, c.as_entire_binding()],
            self.mirrors(),
            &self.params,
        );
        kernels::run_now(gpu, &[&dispatch])?;
        let got = gpu.read_f32(&c)?;
        let mut want = c0;
        let [a, b, bias, mask] = &self.inputs;
        crate::cpu::twins::matmul(a, b, bias, mask, &mut want, &self.params);
        let scale = want.iter().fold(1f32, |m, w| m.max(w.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        Ok(worst <= 1e-4 * scale * (self.params.k as f32).sqrt())
    }
}

/// Seconds one dispatch takes, each run after `copies` (mirror, buffer, floats): enough runs in
/// one submission to fill about 20 ms (at least 2), after one timed alone. Without copies the
/// runs share one pass, as a step's dispatches do.
fn time(gpu: &Gpu, d: &Dispatch, copies: &[(&Mirror, &wgpu::Buffer, usize)]) -> Result<f64> {
    let run = |reps: usize| -> Result<f64> {
        let t = Instant::now();
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        if copies.is_empty() {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            (0..reps).for_each(|_| d.record(&mut pass));
        } else {
            for _ in 0..reps {
                for (mirror, buffer, floats) in copies {
                    mirror.copy_from(&mut encoder, buffer, 0, *floats);
                }
                d.record(&mut encoder.begin_compute_pass(&Default::default()));
            }
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let once = run(1)?;
    let reps = ((0.02 / once.max(1e-6)) as usize).clamp(2, 20);
    Ok(run(reps)? / reps as f64)
}

/// Whether `v` can compute `site`'s product for `rows` images and `hidden` neurons in the
/// engine: it fits the product, and where it reads texture mirrors, the engine's mirrors (of x
/// and δ1 with the test pass's rows too, and of W1) fit the adapter's largest texture.
fn usable(gpu: &Gpu, v: &MatmulVariant, site: Site, (rows, hidden): (u32, u32)) -> bool {
    let fit = |floats: usize| Mirror::fits(&gpu.limits, floats);
    let x_rows = (rows as usize).max(crate::engine::EVAL_BATCH);
    v.fits_at(site, &site.params(rows, hidden, (1.0, 0.0), 1))
        && (!v.textures.contains(&true)
            || [PIXELS, hidden as usize]
                .iter()
                .all(|&cols| fit(x_rows * cols))
                && fit(hidden as usize * PIXELS))
}

/// The variant for `site` when nothing is measured: reg8x4 on a CPU adapter, else tiled16.
fn fallback(gpu: &Gpu, p: &MatmulParams) -> &'static MatmulVariant {
    let offered = |v: &&MatmulVariant| {
        v.offered_on(gpu) && v.fits(p) && !v.subgroup8 && !v.textures.contains(&true)
    };
    let software = matmul_variants()
        .iter()
        .filter(offered)
        .find(|v| v.software == gpu.is_software());
    software.unwrap_or(&matmul_variants()[0])
}

/// Seconds of search one start-up may spend (GPU_TRAIN_SEARCH_SECONDS overrides): a cold
/// compile of one variant on lavapipe takes 0.2-2.6 s, so a first run measures a few, and each
/// later run goes on from where the last stopped until every variant is measured.
fn budget() -> f64 {
    std::env::var("GPU_TRAIN_SEARCH_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v >= 0.0)
        .unwrap_or(2.0)
}

/// Measures the offered variants not yet in `known`, in the family's order (then the fallback,
/// tiled16 last on a CPU adapter), until the time budget is spent; each variant is
/// compiled once and measured on every product it fits. Returns the new measurements and the
/// (site, variant) pairs left for a later run.
fn search(
    gpu: &Gpu,
    (rows, hidden): (u32, u32),
    known: &Measured,
) -> Result<(Vec<(Site, &'static str, Option<f64>)>, usize)> {
    let start = Instant::now();
    let base = fallback(gpu, &Site::Hidden.params(rows, hidden, (1.0, 0.0), 1));
    let mut order: Vec<&'static MatmulVariant> = matmul_variants()
        .iter()
        .filter(|v| v.offered_on(gpu))
        .collect();
    // The family in its order of likely winners, then the fallback, tiled16 last: a cold
    // compile is most of a candidate's cost, so the first seconds go to the likeliest.
    order.sort_by_key(|v| (!v.software, v.name == base.name));
    let mut benches: Vec<Option<Bench>> = Site::ALL.iter().map(|_| None).collect();
    let (mut new, mut left, mut tried, mut dearest) = (Vec::new(), 0, 0, 0f64);
    for v in order {
        let todo: Vec<Site> = Site::ALL
            .into_iter()
            .filter(|&s| usable(gpu, v, s, (rows, hidden)))
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
            let bench = benches[site as usize]
                .get_or_insert_with(|| Bench::new(gpu, site, rows, hidden, 7 + site as u64));
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
fn picks_from(gpu: &Gpu, (rows, hidden): (u32, u32), known: &Measured) -> [Pick; SITES] {
    Site::ALL.map(|site| {
        let p = site.params(rows, hidden, (1.0, 0.0), 1);
        let best = matmul_variants()
            .iter()
            .filter(|v| v.offered_on(gpu) && usable(gpu, v, site, (rows, hidden)))
            .filter_map(|v| Some((v, (*known.get(&(site, v.name))?)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((variant, s)) => Pick {
                variant,
                seconds: Some(s),
            },
            None => Pick {
                variant: fallback(gpu, &p),
                seconds: None,
            },
        }
    })
}

/// Each product's variant for `gpu` at `rows` images and `hidden` neurons: `forced` by name
/// (wherever it can compute the product), else remembered, cached or searched.
pub fn choose(gpu: &Gpu, forced: Option<&str>, rows: u32, hidden: u32) -> Result<Choice> {
    if let Some(name) = forced {
        let v = MatmulVariant::by_name(name)?;
        if v.subgroup8 && !gpu.has_subgroups_of(8) {
            return Err(Error::Config(format!(
                "--kernels {name} shares rows through subgroups of 8 lanes, which {} lacks",
                gpu.info.name
            )));
        }
        let picks = Site::ALL.map(|site| {
            let p = site.params(rows, hidden, (1.0, 0.0), 1);
            Pick {
                variant: match usable(gpu, v, site, (rows, hidden)) {
                    true => v,
                    false => fallback(gpu, &p),
                },
                seconds: None,
            }
        });
        return Ok(Choice {
            picks,
            how: "chosen with --kernels where it fits".into(),
        });
    }
    if !matmul_variants()
        .iter()
        .any(|v| v.software && v.offered_on(gpu))
    {
        // A hardware adapter: one variant is offered, nothing to measure.
        let v = &matmul_variants()[0];
        return Ok(Choice {
            picks: [Pick {
                variant: v,
                seconds: None,
            }; SITES],
            how: format!("{}: the variant for hardware adapters", v.name),
        });
    }
    static CHOSEN: OnceLock<Mutex<HashMap<String, Choice>>> = OnceLock::new();
    let memo = CHOSEN.get_or_init(Default::default);
    let key = key(gpu, rows, hidden);
    // Held while measuring: replicas opened at once wait for the first's answer.
    let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = memo.get(&key) {
        return Ok(c.clone());
    }
    let mut known = read_cache(&key);
    let t = Instant::now();
    let (new, left) = search(gpu, (rows, hidden), &known)?;
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
        picks: picks_from(gpu, (rows, hidden), &known),
        how,
    };
    memo.insert(key, choice.clone());
    Ok(choice)
}
