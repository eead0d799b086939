//! The compute pipelines, one per WGSL file in `shaders/`, built once, and the `Params`
//! structs that are their uniform buffers (the same field order as the WGSL structs).
//!
//! The matmul variants and the step's products (`matmul.rs`) and a [`Dispatch`] (`dispatch.rs`)
//! are re-exported here. A dispatch is one kernel launch ready to record:
//! pipeline, bind group, workgroup counts. Training steps are lists of dispatches recorded
//! into one compute pass.

pub use super::dispatch::{
    groups_1d, run_now, storage, storage_bytes, storage_zeroed, sub, sub16, Dispatch,
};
pub use super::matmul::{fixed_variants, matmul_variants, Elems, MatmulVariant, Site, SITES};
pub use super::variants::Load;
use bytemuck::{Pod, Zeroable};

/// `matmul.wgsl` epilogue flags.
pub const HAS_BIAS: u32 = 1;
pub const RELU: u32 = 2;
pub const MASK: u32 = 4;
/// `matmul.wgsl`'s TILE: its workgroup is TILE×TILE threads over a TILE×TILE block of C. K-slices
/// are whole multiples of it for every variant.
pub const MATMUL_TILE: u32 = 16;
/// The 1-D kernels' workgroup size (`WORKGROUP` in their WGSL).
pub const WORKGROUP: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct UnpackParams {
    pub rows: u32,
    pub words_per_image: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub splits: u32,
    pub k_per_split: u32,
    pub a_rs: u32,
    pub a_cs: u32,
    pub b_rs: u32,
    pub b_cs: u32,
    pub alpha: f32,
    pub beta: f32,
    pub flags: u32,
}

/// How a matrix is laid out: `(row stride, column stride)` in elements.
pub type Strides = (u32, u32);
/// A (rows, cols) row-major matrix.
pub fn row_major(cols: u32) -> Strides {
    (cols, 1)
}
/// The transpose of a (rows, cols) row-major matrix, read as (cols, rows).
pub fn transposed(cols: u32) -> Strides {
    (1, cols)
}

impl MatmulParams {
    /// C (m, n) = alpha · A (m, k) · B (k, n) + beta · C, with the K range cut into `splits`
    /// slices (each a whole number of tiles).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (m, n, k): (u32, u32, u32),
        a: Strides,
        b: Strides,
        alpha: f32,
        beta: f32,
        flags: u32,
        splits: u32,
    ) -> Self {
        let tiles = k.div_ceil(MATMUL_TILE);
        let splits = splits.clamp(1, tiles.max(1));
        let k_per_split = tiles.div_ceil(splits) * MATMUL_TILE;
        MatmulParams {
            m,
            n,
            k,
            // Recount: rounding the slice up to whole tiles may leave fewer slices.
            splits: k.div_ceil(k_per_split).max(1),
            k_per_split,
            a_rs: a.0,
            a_cs: a.1,
            b_rs: b.0,
            b_cs: b.1,
            alpha,
            beta,
            flags,
        }
    }

    /// Checks that every element the product can touch lies inside its bindings (lengths in
    /// f32 elements): A up to (m−1, k−1), B up to (k−1, n−1), C's m·n (times the splits for
    /// partial sums), the bias and mask where the flags read them. Every matmul dispatch passes
    /// this before it is recorded, which is what makes an unchecked variant safe to run.
    pub fn check_fits(&self, a: u64, b: u64, bias: u64, mask: u64, c: u64) -> Result<(), String> {
        let (m, n, k) = (self.m as u64, self.n as u64, self.k as u64);
        if m == 0 || n == 0 || k == 0 {
            return Err(format!("empty product {m}x{n}x{k}"));
        }
        let last_a = (m - 1) * self.a_rs as u64 + (k - 1) * self.a_cs as u64;
        let last_b = (k - 1) * self.b_rs as u64 + (n - 1) * self.b_cs as u64;
        let c_len = if self.splits > 1 {
            self.splits as u64 * m * n
        } else {
            m * n
        };
        let checks = [
            ("A", last_a < a),
            ("B", last_b < b),
            ("C", c_len <= c),
            ("bias", self.flags & HAS_BIAS == 0 || n <= bias),
            ("mask", self.flags & MASK == 0 || m * n <= mask),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((what, _)) => Err(format!(
                "matmul {m}x{n}x{k} would read past {what}: {self:?}"
            )),
            None => Ok(()),
        }
    }

    /// (flops, bytes) of the product: 2mnk operations; A, B and C read once (C only if
    /// beta ≠ 0), C (or the split-K partial sums) written once, 4 bytes each.
    pub fn work(&self) -> (f64, f64) {
        self.work_in(Elems::F32)
    }

    /// [`MatmulParams::work`] with A and B of `elems`' operand size and C of its result size.
    pub fn work_in(&self, elems: Elems) -> (f64, f64) {
        let (m, n, k) = (self.m as f64, self.n as f64, self.k as f64);
        let read_c = if self.beta != 0.0 { m * n } else { 0.0 };
        let written = self.splits as f64 * m * n;
        let (operand, result) = (elems.operand_bytes() as f64, elems.result_bytes() as f64);
        (
            2.0 * m * n * k,
            operand * (m * k + k * n) + result * (read_c + written),
        )
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct SoftmaxParams {
    pub rows: u32,
    pub classes: u32,
    /// Training: the global batch's rows, which δ2 = (p − onehot) is divided by;
    /// 0: loss and accuracy only (evaluation).
    pub divisor: u32,
    /// Index in the totals buffer where this batch's loss sum goes (correct count at +1).
    pub at: u32,
    /// δ2 is multiplied by it: --precision f16's loss scale, 1 otherwise.
    pub scale: f32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BiasParams {
    pub rows: u32,
    pub cols: u32,
    /// out = alpha · Σ δ + beta · out: (1, 0) for the gradient, (−lr, 1) for the fused update.
    pub alpha: f32,
    pub beta: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct SgdParams {
    pub len: u32,
    pub lr: f32,
    pub _pad: [u32; 2],
}

/// The six pipelines (matmul in the variant chosen for the adapter).
pub struct Kernels {
    pub unpack: wgpu::ComputePipeline,
    /// Each product's variant and pipeline, indexed by [`Site`].
    pub matmul: [(&'static MatmulVariant, wgpu::ComputePipeline); SITES],
    pub splitk_reduce: wgpu::ComputePipeline,
    pub softmax_xent: wgpu::ComputePipeline,
    /// A bias's gradient or fused update: bias_update.wgsl or its serial sibling.
    pub bias_update: wgpu::ComputePipeline,
    /// Which of the two `bias_update` is (and `KernelsF16::bias_grad` with it).
    pub bias_sum: BiasSum,
    pub sgd_update: wgpu::ComputePipeline,
}

/// How a bias's gradient is summed over the batch's rows. Both ways make the same additions in
/// the same order (64 partial sums, then a tree), so they give the same bits
/// (tests/kernels.rs); they differ in where the tree lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasSum {
    /// bias_update.wgsl: a workgroup of 64 threads a bias, the tree in workgroup memory with a
    /// barrier between levels. Made for GPUs.
    Tree,
    /// bias_update_serial.wgsl: one invocation a bias, the tree in private memory. Made for CPU
    /// adapters, where each barrier is a switch between batches of lanes: the hidden layer's
    /// bias took 0.39-0.42 ms as a tree and 0.10-0.12 ms this way on lavapipe (Zen 4,
    /// `cargo bench --bench kernels`, AVX-512 on and masked).
    Serial,
}

impl BiasSum {
    /// The way made for this kind of adapter.
    pub fn for_adapter(software: bool) -> BiasSum {
        match software {
            true => BiasSum::Serial,
            false => BiasSum::Tree,
        }
    }

    /// Workgroups for `cols` biases.
    pub fn workgroups(self, cols: u32) -> (u32, u32, u32) {
        match self {
            BiasSum::Tree => (cols, 1, 1),
            BiasSum::Serial => (cols.div_ceil(WORKGROUP), 1, 1),
        }
    }

    /// The shader of the f32 kernel and of its f16 sibling.
    fn files(self) -> (&'static str, &'static str) {
        match self {
            BiasSum::Tree => ("bias_update", "bias_grad_f16"),
            BiasSum::Serial => ("bias_update_serial", "bias_grad_f16_serial"),
        }
    }
}

/// Each kernel's WGSL source, by file name (the tests check the constants and `Params`
/// structs in them against the Rust side).
pub const SOURCES: [(&str, &str); 15] = [
    (
        "unpack_batch",
        include_str!("../../shaders/unpack_batch.wgsl"),
    ),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "matmul_reg8x4",
        include_str!("../../shaders/matmul_reg8x4.wgsl"),
    ),
    (
        "splitk_reduce",
        include_str!("../../shaders/splitk_reduce.wgsl"),
    ),
    (
        "softmax_xent",
        include_str!("../../shaders/softmax_xent.wgsl"),
    ),
    (
        "bias_update",
        include_str!("../../shaders/bias_update.wgsl"),
    ),
    (
        "bias_update_serial",
        include_str!("../../shaders/bias_update_serial.wgsl"),
    ),
    ("sgd_update", include_str!("../../shaders/sgd_update.wgsl")),
    // --precision f16 (compiled only on adapters with SHADER_F16).
    (
        "unpack_batch_f16",
        include_str!("../../shaders/unpack_batch_f16.wgsl"),
    ),
    ("matmul_f16", include_str!("../../shaders/matmul_f16.wgsl")),
    (
        "matmul_f16_f32out",
        include_str!("../../shaders/matmul_f16_f32out.wgsl"),
    ),
    (
        "softmax_xent_f16",
        include_str!("../../shaders/softmax_xent_f16.wgsl"),
    ),
    (
        "bias_grad_f16",
        include_str!("../../shaders/bias_grad_f16.wgsl"),
    ),
    (
        "bias_grad_f16_serial",
        include_str!("../../shaders/bias_grad_f16_serial.wgsl"),
    ),
    (
        "sgd_update_f16",
        include_str!("../../shaders/sgd_update_f16.wgsl"),
    ),
];

/// The pipelines `--precision f16` adds (its products are [`Kernels::matmul`]'s, built from
/// f16 variants).
pub struct KernelsF16 {
    pub unpack: wgpu::ComputePipeline,
    pub softmax_xent: wgpu::ComputePipeline,
    pub bias_grad: wgpu::ComputePipeline,
    pub sgd_update: wgpu::ComputePipeline,
}

impl KernelsF16 {
    /// The f16 pipelines, the bias gradient summed as `bias_sum` says.
    pub fn new(device: &wgpu::Device, bias_sum: BiasSum) -> Self {
        let get = |name: &str| {
            let (_, source) = SOURCES.iter().find(|(n, _)| *n == name).expect("a shader");
            pipeline(device, name, source)
        };
        KernelsF16 {
            unpack: get("unpack_batch_f16"),
            softmax_xent: get("softmax_xent_f16"),
            bias_grad: get(bias_sum.files().1),
            sgd_update: get("sgd_update_f16"),
        }
    }
}

pub fn pipeline(device: &wgpu::Device, name: &str, source: &str) -> wgpu::ComputePipeline {
    pipeline_checked(device, name, source, true)
}

/// The pipeline of one matmul variant (unchecked where the variant says so).
pub fn matmul_pipeline(device: &wgpu::Device, v: &MatmulVariant) -> wgpu::ComputePipeline {
    pipeline_checked(device, v.name, v.source, !v.unchecked)
}

fn pipeline_checked(
    device: &wgpu::Device,
    name: &str,
    source: &str,
    checked: bool,
) -> wgpu::ComputePipeline {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    let module = if checked {
        device.create_shader_module(desc)
    } else {
        // SAFETY: only for a matmul variant marked `unchecked`, whose indices are clamped to
        // the matrix in the shader, and whose every dispatch passed MatmulParams::check_fits
        // against the lengths of the buffers bound to it (Dispatch::matmul).
        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    };
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        // The layout is deduced from the shader's bindings.
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

impl Kernels {
    /// Builds every pipeline, every product's matmul from `variant`, biases as a tree.
    pub fn new(device: &wgpu::Device, variant: &'static MatmulVariant) -> Self {
        Kernels::with_picks(device, [variant; SITES], BiasSum::Tree)
    }

    /// Builds every pipeline, each product's matmul from its pick (indexed by [`Site`]), the
    /// bias sums as `bias_sum` says.
    pub fn with_picks(
        device: &wgpu::Device,
        picks: [&'static MatmulVariant; SITES],
        bias_sum: BiasSum,
    ) -> Self {
        let get = |name: &str| {
            let (_, source) = SOURCES.iter().find(|(n, _)| *n == name).expect("a shader");
            pipeline(device, name, source)
        };
        let [unpack, splitk_reduce, softmax_xent, bias_update, sgd_update] = [
            "unpack_batch",
            "splitk_reduce",
            "softmax_xent",
            bias_sum.files().0,
            "sgd_update",
        ]
        .map(get);
        // One pipeline per distinct variant (wgpu pipelines are shared handles).
        let mut built: Vec<(&'static str, wgpu::ComputePipeline)> = Vec::new();
        let matmul = picks.map(|v| {
            let found = built
                .iter()
                .find(|(n, _)| *n == v.name)
                .map(|b| b.1.clone());
            let p = found.unwrap_or_else(|| matmul_pipeline(device, v));
            built.push((v.name, p.clone()));
            (v, p)
        });
        Kernels {
            unpack,
            matmul,
            splitk_reduce,
            softmax_xent,
            bias_update,
            bias_sum,
            sgd_update,
        }
    }
}
