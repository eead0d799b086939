//! The compute pipelines, one per WGSL file in `shaders/`, built once, and the `Params`
//! structs that are their uniform buffers (the same field order as the WGSL structs).
//!
//! The matmul variants and the step's products (`matmul.rs`) and a [`Dispatch`] (`dispatch.rs`)
//! are re-exported here. A dispatch is one kernel launch ready to record:
//! pipeline, bind group, workgroup counts. Training steps are lists of dispatches recorded
//! into one compute pass.

use crate::abi::{Elems, SITES, WORKGROUP};
use super::matmul::MatmulVariant;
/// The six pipelines (matmul in the variant chosen for the adapter).
pub struct Kernels {
    pub unpack: wgpu::ComputePipeline,
    /// Each product's variant and pipeline, indexed by [`Site`].
    pub matmul: [(&'static MatmulVariant, wgpu::ComputePipeline); SITES],
    pub splitk_reduce: wgpu::ComputePipeline,
    pub softmax_xent: wgpu::ComputePipeline,
    /// A bias's gradient or fused update: bias_update.wgsl or its serial sibling.
    pub bias_update: wgpu::ComputePipeline,
    /// Which of the two `bias_update` is (and `KernelsF16::bias_grad` with it, the same shader in f16).
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

    /// The shader (for both precisions).
    fn file(self) -> &'static str {
        match self {
            BiasSum::Tree => "bias_update",
            BiasSum::Serial => "bias_update_serial",
        }
    }
}

/// Each kernel's WGSL source, by file name, one for both precisions (written over `Elem` and
/// `Out`, which [`Elems::prelude`] defines; the tests check the constants and `Params` structs
/// in them against the Rust side).
pub const SOURCES: [(&str, &str); 8] = [
    ("unpack_batch", include_str!("../../shaders/unpack_batch.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("matmul_reg8x4", include_str!("../../shaders/matmul_reg8x4.wgsl")),
    ("splitk_reduce", include_str!("../../shaders/splitk_reduce.wgsl")),
    ("softmax_xent", include_str!("../../shaders/softmax_xent.wgsl")),
    ("bias_update", include_str!("../../shaders/bias_update.wgsl")),
    ("bias_update_serial", include_str!("../../shaders/bias_update_serial.wgsl")),
    ("sgd_update", include_str!("../../shaders/sgd_update.wgsl")),
];

/// The pipeline of kernel `name` (a [`SOURCES`] name) reading and writing `elems`.
pub fn kernel(device: &wgpu::Device, name: &str, elems: Elems) -> wgpu::ComputePipeline {
    let (_, body) = SOURCES.iter().find(|(n, _)| *n == name).expect("a shader");
    let label = match elems {
        Elems::F32 => name.to_string(),
        _ => format!("{name} (f16)"),
    };
    pipeline(device, &label, &format!("{}{body}", elems.prelude()))
}

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
        let get = |name: &str| kernel(device, name, Elems::F16);
        KernelsF16 {
            unpack: get("unpack_batch"),
            softmax_xent: get("softmax_xent"),
            bias_grad: get(bias_sum.file()),
            sgd_update: get("sgd_update"),
        }
    }
}

pub fn pipeline(device: &wgpu::Device, name: &str, source: &str) -> wgpu::ComputePipeline {
    pipeline_checked(device, name, source, true)
}

/// The pipeline of one matmul variant (unchecked where the variant says so).
pub fn matmul_pipeline(device: &wgpu::Device, v: &MatmulVariant) -> wgpu::ComputePipeline {
    pipeline_checked(device, v.name, &v.wgsl(), !v.unchecked)
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
        let get = |name: &str| kernel(device, name, Elems::F32);
        let [unpack, splitk_reduce, softmax_xent, bias_update, sgd_update] = [
            "unpack_batch",
            "splitk_reduce",
            "softmax_xent",
            bias_sum.file(),
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
