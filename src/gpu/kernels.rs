//! The compute pipelines, one per WGSL file in `shaders/`, built once (their `Params` structs
//! live in [`crate::abi`]). A step is five of them: unpack, the hidden layer's product, head
//! (the output layer, SoftMax, loss, δ2), backward (δ1, ∂W2, ∂b2, ∂b1) and the hidden layer's
//! weight product, recorded into one compute pass (gpu/plan).

use crate::abi::{Elems, SITES};
use super::matmul::MatmulVariant;
/// The step's pipelines (each matmul in the variant chosen for its product).
pub struct Kernels {
    pub unpack: wgpu::ComputePipeline,
    /// Each product's variant and pipeline, indexed by [`Site`](crate::abi::Site).
    pub matmul: [(&'static MatmulVariant, wgpu::ComputePipeline); SITES],
    /// The output layer, SoftMax, loss and δ2 (and split-K's reduction) in one dispatch.
    pub head: wgpu::ComputePipeline,
    /// δ1, ∂W2, ∂b2 and ∂b1 (or their fused update) in one dispatch.
    pub backward: wgpu::ComputePipeline,
    pub sgd_update: wgpu::ComputePipeline,
    /// How head and backward block their work (both precisions).
    pub blocking: Blocking,
}

/// How the fused kernels block their work: rows a head thread computes together, hidden
/// neurons a backward thread does, and backward's threads a workgroup. On a GPU one row and one
/// neuron a thread (the most threads side by side) in workgroups of 64; on a CPU adapter,
/// where a load costs more than a multiply-add (gpu/variants.rs), a block, so that each weight
/// or δ2 loaded serves several, and workgroups of 8 (one SIMD row of llvmpipe's): 128 neurons
/// in blocks of 8 are 16 threads, which in one workgroup of 64 ran on one core while the other
/// waited. The sums are the same in the same order either way: the weights come out with the
/// same bits (tests/kernels.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    pub head_rows: u32,
    pub backward_cols: u32,
    pub backward_workgroup: u32,
}

impl Blocking {
    pub const GPU: Blocking = Blocking {
        head_rows: 1,
        backward_cols: 1,
        backward_workgroup: 64,
    };
    /// Measured on lavapipe (Zen 3, BENCHMARKS.md, issue 31).
    pub const CPU: Blocking = Blocking {
        head_rows: 8,
        backward_cols: 8,
        backward_workgroup: 8,
    };

    /// The blocking made for the software family or the hardware one
    /// ([`crate::gpu::matmul::software_family`]).
    pub fn for_family(software: bool) -> Blocking {
        if software {
            Blocking::CPU
        } else {
            Blocking::GPU
        }
    }

    /// Workgroups of backward for `hidden` neurons: a thread per block of neurons, then one per
    /// output bias.
    pub fn backward_groups(self, hidden: u32) -> (u32, u32, u32) {
        let threads = hidden.div_ceil(self.backward_cols) + crate::data::CLASSES as u32;
        (threads.div_ceil(self.backward_workgroup), 1, 1)
    }

    /// Kernel `name`'s source with this blocking's constants (its one line each rewritten).
    fn apply(self, name: &str, body: &str) -> String {
        let set = |body: &str, constant: &str, value: u32| {
            let default = if constant == "WORKGROUP" { 64 } else { 1 };
            let line = format!("const {constant}: u32 = {default}u;");
            assert!(body.contains(&line), "{name}.wgsl sets {constant} in one line");
            body.replace(&line, &format!("const {constant}: u32 = {value}u;"))
        };
        match name {
            "head" => set(body, "ROWS_PER_THREAD", self.head_rows),
            "backward" => set(
                &set(body, "COLS_PER_THREAD", self.backward_cols),
                "WORKGROUP",
                self.backward_workgroup,
            ),
            _ => body.to_string(),
        }
    }
}

/// Each kernel's WGSL source, by file name, one for both precisions (written over `Elem` and
/// `Out`, which [`Elems::prelude`] defines; the tests check the constants and `Params` structs
/// in them against the Rust side).
pub const SOURCES: [(&str, &str); 6] = [
    ("unpack_batch", include_str!("../../shaders/unpack_batch.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("matmul_reg8x4", include_str!("../../shaders/matmul_reg8x4.wgsl")),
    ("head", include_str!("../../shaders/head.wgsl")),
    ("backward", include_str!("../../shaders/backward.wgsl")),
    ("sgd_update", include_str!("../../shaders/sgd_update.wgsl")),
];

/// The pipeline of kernel `name` (a [`SOURCES`] name) reading and writing `elems`, blocked as
/// `blocking` says (head and backward).
pub fn kernel(device: &wgpu::Device, name: &str, elems: Elems, blocking: Blocking) -> wgpu::ComputePipeline {
    let (_, body) = SOURCES.iter().find(|(n, _)| *n == name).expect("a shader");
    let label = match elems {
        Elems::F32 => name.to_string(),
        _ => format!("{name} (f16)"),
    };
    pipeline(device, &label, &format!("{}{}", elems.prelude(), blocking.apply(name, body)))
}

/// The pipelines `--precision f16` adds (its products are [`Kernels::matmul`]'s, built from
/// f16 variants).
pub struct KernelsF16 {
    pub unpack: wgpu::ComputePipeline,
    pub head: wgpu::ComputePipeline,
    pub backward: wgpu::ComputePipeline,
    pub sgd_update: wgpu::ComputePipeline,
    /// How head and backward block their work.
    pub blocking: Blocking,
}

impl KernelsF16 {
    /// The f16 pipelines, head and backward blocked as `blocking` says.
    pub fn new(device: &wgpu::Device, blocking: Blocking) -> Self {
        let get = |name: &str| kernel(device, name, Elems::F16, blocking);
        KernelsF16 {
            unpack: get("unpack_batch"),
            head: get("head"),
            backward: get("backward"),
            sgd_update: get("sgd_update"),
            blocking,
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
    /// Builds every pipeline, every product's matmul from `variant`, the fused kernels blocked
    /// for a GPU.
    pub fn new(device: &wgpu::Device, variant: &'static MatmulVariant) -> Self {
        Kernels::with_picks(device, [variant; SITES], Blocking::GPU)
    }

    /// Builds every pipeline, each product's matmul from its pick (indexed by
    /// [`Site`](crate::abi::Site)), head and backward blocked as `blocking` says.
    pub fn with_picks(
        device: &wgpu::Device,
        picks: [&'static MatmulVariant; SITES],
        blocking: Blocking,
    ) -> Self {
        let get = |name: &str| kernel(device, name, Elems::F32, blocking);
        let [unpack, head, backward, sgd_update] =
            ["unpack_batch", "head", "backward", "sgd_update"].map(get);
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
            head,
            backward,
            sgd_update,
            blocking,
        }
    }
}
