//! The matrix products' kernels: [`MatmulVariant`] (one way of computing matmul.wgsl's product:
//! a WGSL source, its blocking, what it reads and writes), the hand-written variants and the
//! generated family together ([`matmul_variants`]), and the step's products ([`Site`]), each of
//! which runs its own pick (gpu/autotune).

use super::context::Gpu;
use super::variants::SHAPES;
use crate::abi::{Elems, Load, MatmulParams, Site, MATMUL_TILE};
use crate::engine::Precision;

/// One way of computing matmul.wgsl's product: a WGSL file, the block of C one workgroup
/// covers, and how far K may be split. Every variant reads the same `Params` and bindings,
/// applies the same epilogue and adds each sum in the same k order; they differ in how the
/// work is cut up, which suits one kind of adapter or another. The trainer times them on the
/// model's own shapes at start-up and keeps the fastest (gpu/autotune).
#[derive(Debug, PartialEq, Eq)]
pub struct MatmulVariant {
    pub name: &'static str,
    /// The WGSL, written over `Elem` and `Out` ([`MatmulVariant::wgsl`] adds the prelude).
    pub source: &'static str,
    /// Rows and columns of C one workgroup computes.
    pub block_m: u32,
    pub block_n: u32,
    /// At most this many K-slices for a forward product (1: never split).
    pub max_splits: u32,
    /// Compile without the runtime bounds checks wgpu adds to every array access. Only for a
    /// variant whose every index is in bounds by construction (clamped rows and columns,
    /// guarded writes), and only with [`MatmulParams::check_fits`] run on every dispatch.
    pub unchecked: bool,
    /// How it reads A and B (which products it can compute: [`Load::fits`]).
    pub load: Load,
    /// Shares A through subgroups of exactly 8 lanes (gpu/variants.rs).
    pub subgroup8: bool,
    /// Tuned for CPU adapters: the search offers it to nothing else.
    pub software: bool,
    /// Reads A, B, and C's old values (where beta ≠ 0) through the engine's texture mirrors
    /// (gpu/mirror.rs) instead of their buffers: only at a [`Site`] whose operand is mirrored
    /// ([`MatmulVariant::fits_at`]).
    pub textures: [bool; 3],
    /// What it reads and writes: f32, or --precision f16's f16 operands with an f16 or f32
    /// result.
    pub elems: Elems,
    /// The name of its f32 sibling (its own name for an f32 variant): `--kernels` names a
    /// shape, which runs in the step's precision.
    pub base: &'static str,
}

/// The hand-written matmul variants: tiled16 and reg8x4, the f32 defaults where nothing was
/// measured (on a GPU and on a CPU adapter), and reg8x4's f16 siblings, the f16 defaults on
/// both; [`matmul_variants`] adds the generated family (gpu/variants.rs).
const FIXED_VARIANTS: [MatmulVariant; 4] = [
    // 16×16 tiles staged in workgroup memory, split K: made for big GPUs (BENCHMARKS.md, H200).
    MatmulVariant {
        name: "tiled16",
        source: include_str!("../../shaders/matmul.wgsl"),
        block_m: MATMUL_TILE,
        block_n: MATMUL_TILE,
        max_splits: 16,
        unchecked: false,
        load: Load::Scalar,
        subgroup8: false,
        software: false,
        textures: [false; 3],
        elems: Elems::F32,
        base: "tiled16",
    },
    // 8×4 registers a thread, no workgroup memory, no split: made for CPU-based adapters.
    MatmulVariant {
        name: "reg8x4",
        source: include_str!("../../shaders/matmul_reg8x4.wgsl"),
        block_m: 64,
        block_n: 32,
        max_splits: 1,
        // The bounds checks cost 1.4-2× on lavapipe (BENCHMARKS.md): every load selects
        // between the value and zero. Each index here is clamped to the matrix, and the host
        // checks each product against its buffers before dispatching it.
        unchecked: true,
        load: Load::Scalar,
        subgroup8: false,
        software: true,
        textures: [false; 3],
        elems: Elems::F32,
        base: "reg8x4",
    },
    // --precision f16's products: reg8x4 reading f16, adding in f32 (every adapter: there is
    // no tiled f16 kernel), with an f16 result and with an f32 one.
    reg8x4_f16("reg8x4_f16", Elems::F16),
    reg8x4_f16("reg8x4_f16_f32out", Elems::F16ToF32),
];

/// reg8x4 in f16 (the same shaders/matmul_reg8x4.wgsl under an f16 prelude): unchecked as
/// reg8x4 is (its indices are clamped the same way), and offered on every adapter.
const fn reg8x4_f16(name: &'static str, elems: Elems) -> MatmulVariant {
    MatmulVariant {
        name,
        source: include_str!("../../shaders/matmul_reg8x4.wgsl"),
        block_m: 64,
        block_n: 32,
        max_splits: 1,
        unchecked: true,
        load: Load::Scalar,
        subgroup8: false,
        software: false,
        textures: [false; 3],
        elems,
        base: "reg8x4",
    }
}

/// Every matmul variant: the hand-written ones (tiled16 first), matmul.wgsl's other tiles and
/// split-K limits, then the generated family, f32 and f16 (filter by [`MatmulVariant::elems`]).
pub fn matmul_variants() -> &'static [MatmulVariant] {
    static ALL: std::sync::OnceLock<Vec<MatmulVariant>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<MatmulVariant> = FIXED_VARIANTS.into_iter().collect();
        all.extend(tiled());
        all.extend(generated());
        all
    })
}

/// matmul.wgsl's family for hardware adapters, beside tiled16: 8×8 tiles (a quarter of the
/// threads a workgroup, four times the workgroups: more of a big GPU's multiprocessors busy at
/// batch 64), and K split at most 4 ways or not at all (each split adds the slices' partial
/// sums to write and to add up in head). 32×32 would be 1,024 threads a workgroup, past the
/// 256 wgpu promises everywhere.
fn tiled() -> Vec<MatmulVariant> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let source = include_str!("../../shaders/matmul.wgsl");
    let line = format!("const TILE: u32 = {MATMUL_TILE}u;");
    assert!(source.contains(&line), "matmul.wgsl sets TILE in one line");
    [(16, 4), (16, 1), (8, 16), (8, 1)]
        .into_iter()
        .map(|(tile, max_splits)| {
            // Its own name is its f32 sibling's (`base`): these come in f32 only.
            let name = leak(match max_splits {
                16 => format!("tiled{tile}"),
                s => format!("tiled{tile}_k{s}"),
            });
            MatmulVariant {
                name,
                source: leak(source.replace(&line, &format!("const TILE: u32 = {tile}u;"))),
                block_m: tile,
                block_n: tile,
                max_splits,
                unchecked: false,
                load: Load::Scalar,
                subgroup8: false,
                software: false,
                textures: [false; 3],
                elems: Elems::F32,
                base: name,
            }
        })
        .collect()
}

/// The hand-written variants (the first of [`matmul_variants`]), whose tiled16, reg8x4 and
/// reg8x4_f16(_f32out) run wherever nothing was measured.
pub fn fixed_variants() -> &'static [MatmulVariant] {
    &matmul_variants()[..FIXED_VARIANTS.len()]
}

impl MatmulVariant {
    /// The WGSL this variant compiles: its element types' prelude, then its source.
    pub fn wgsl(&self) -> String {
        format!("{}{}", self.elems.prelude(), self.source)
    }

    /// The variant called `name`, or an error listing the shapes `--kernels` can name.
    pub fn by_name(name: &str) -> crate::error::Result<&'static MatmulVariant> {
        matmul_variants()
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = matmul_variants()
                    .iter()
                    .filter(|v| v.elems == Elems::F32)
                    .map(|v| v.name)
                    .collect();
                crate::error::Error::Config(format!(
                    "--kernels {name}: no such matmul variant; there are {}",
                    names.join(", ")
                ))
            })
    }

    /// Whether this variant can compute `p`: its loads fit the layout, and only the plain
    /// scalar f32 kernels (tiled16, reg8x4) write split-K partial sums.
    pub fn fits(&self, p: &MatmulParams) -> bool {
        let partial_sums = self.load == Load::Scalar && !self.subgroup8 && self.elems == Elems::F32;
        self.load.fits(p) && (p.splits == 1 || partial_sums)
    }

    /// This variant's sibling reading and writing `elems` (the same shape), if there is one.
    pub fn sibling(&self, elems: Elems) -> Option<&'static MatmulVariant> {
        matmul_variants()
            .iter()
            .find(|v| v.base == self.base && v.elems == elems)
    }

    /// Whether this variant can compute `site`'s product `p` in a step of `precision`: it reads
    /// and writes the elements the step's buffers hold there, [`MatmulVariant::fits`] `p`,
    /// and each operand it reads through a texture is one the engine mirrors there.
    pub fn fits_at(&self, site: Site, precision: Precision, p: &MatmulParams) -> bool {
        let mirrored = site.mirrored();
        self.elems == site.elems(precision)
            && self.fits(p)
            && (0..3).all(|i| !self.textures[i] || mirrored[i].is_some())
    }

    /// Whether `gpu` can run this variant (f16 ones: with f16 in shaders), and the search should
    /// offer it there. The family's members that only make sense on a CPU adapter (rows shared
    /// through lavapipe's 8-lane subgroups, operands read through texture mirrors, made for
    /// llvmpipe's dear loads) are offered only to the software family; the rest (register
    /// blocks, vec4 loads) to every adapter ([`software_family`]).
    pub fn offered_on(&self, gpu: &Gpu) -> bool {
        let f16 = gpu.features.contains(wgpu::Features::SHADER_F16);
        let cpu_only = self.subgroup8 || self.textures.contains(&true);
        (!self.subgroup8 || gpu.has_subgroups_of(8))
            && (!cpu_only || software_family(gpu))
            && (self.elems == Elems::F32 || f16)
    }

    /// Workgroups for the product `p`: one per block of C and K-slice.
    pub fn workgroups(&self, p: &MatmulParams) -> (u32, u32, u32) {
        (
            p.n.div_ceil(self.block_n),
            p.m.div_ceil(self.block_m),
            p.splits,
        )
    }

    /// K-slices for a forward product with an (m, n) output and inner size k: enough that the
    /// product has about 256 workgroups (a big GPU has over a hundred multiprocessors to fill),
    /// at most `max_splits`, and never more than K has 16-wide tiles. With tiled16 the hidden
    /// layer at batch 64 gets 7 (16 µs against 49 µs unsplit on an H200, the reduction
    /// included, before head took the reduction over).
    pub fn forward_splits(&self, m: usize, n: usize, k: usize) -> u32 {
        let blocks = (m as u32).div_ceil(self.block_m) * (n as u32).div_ceil(self.block_n);
        (256 / blocks.max(1))
            .clamp(1, self.max_splits)
            .min((k as u32).div_ceil(MATMUL_TILE))
    }
}

/// Whether `gpu` gets the family made for CPU adapters: a software adapter does, unless
/// GPU_TRAIN_KERNEL_FAMILY=hardware asks for the hardware family (how CI checks the hardware
/// family's members on lavapipe: every one the search times is first compared with the CPU
/// twin).
pub fn software_family(gpu: &Gpu) -> bool {
    let hardware = match std::env::var("GPU_TRAIN_KERNEL_FAMILY") {
        Ok(v) if v == "hardware" => true,
        Ok(v) if !v.is_empty() => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                log::warn!(
                    "GPU_TRAIN_KERNEL_FAMILY={v}: the one family it can name is \"hardware\"; searching the adapter's own"
                )
            });
            false
        }
        _ => false,
    };
    gpu.is_software() && !hardware
}

/// The generated family (gpu/variants.rs) as variants (built once; their names and sources
/// live for the process): each shape in f32, and (--precision f16) reading f16 with an f16
/// result where a product writes one (x·W1ᵀ) and an f32 result (δ1ᵀ·x). An f16 texture
/// member reads RGBA16F mirrors (gpu/mirror.rs), whose fetches widen to f32 as its buffer loads
/// do. Each shape in its three kinds side by side, so that the search (which goes down this
/// list in order) reaches an f16 step's two large products in its first seconds, as it does an
/// f32 step's.
fn generated() -> Vec<MatmulVariant> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut all = Vec::new();
    for shape in &SHAPES {
        for elems in [Elems::F32, Elems::F16, Elems::F16ToF32] {
            if !shape.comes_in(elems) {
                continue;
            }
            let (block_m, block_n) = shape.block();
            all.push(MatmulVariant {
                name: leak(shape.name(elems)),
                source: leak(shape.wgsl(elems)),
                block_m,
                block_n,
                max_splits: 1,
                unchecked: true,
                load: shape.load,
                subgroup8: shape.shared,
                software: true,
                textures: shape.textures(elems),
                elems,
                base: leak(shape.base_name()),
            });
        }
    }
    all
}
