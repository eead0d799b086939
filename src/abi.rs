//! The shader ABI: what the WGSL kernels in `shaders/` and the Rust side must agree on, in one
//! leaf that both the GPU side (pipelines, plans) and the CPU twins read.
//!
//! * the `Params` structs, the uniform buffers' layouts (the same field order as the WGSL
//!   structs; tests/kernels.rs checks them against the shader text);
//! * the WGSL constants (workgroup sizes, matmul's epilogue flags, the texture mirrors' width);
//! * the element types a kernel reads and writes ([`Elems`]) and how a product is laid out
//!   ([`Strides`], [`Load`]);
//! * the step's two matrix products ([`Site`]) and the `MatmulParams` each one runs with; the fused
//!   kernels' `HeadParams` and `BackwardParams`.

use crate::engine::Precision;
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
pub struct HeadParams {
    pub rows: u32,
    pub hidden: u32,
    /// Training: the global batch's rows, which δ2 = (p − onehot) is divided by;
    /// 0: loss and accuracy only (evaluation).
    pub divisor: u32,
    /// Index in the totals buffer where this batch's loss sum goes (correct count at +1).
    pub at: u32,
    /// δ2 is multiplied by it: --precision f16's loss scale, 1 otherwise.
    pub scale: f32,
    /// K-slices of the hidden layer's product to add up first (1: h is already whole).
    pub splits: u32,
    /// Where W2, b2 and b1 start in the weights binding, in elements.
    pub w2_at: u32,
    pub b2_at: u32,
    pub b1_at: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BackwardParams {
    pub rows: u32,
    pub hidden: u32,
    /// dest = alpha · ∂ + beta · dest: (1, 0) for the gradient, (−lr, 1) for the fused update.
    pub alpha: f32,
    pub beta: f32,
    /// 1: W2 is read from `dest` (the fused update, where dest holds the weights).
    pub in_place: u32,
    /// Where W2 starts in the weights binding, in elements.
    pub w2_at: u32,
    /// Where W2, b2 and b1 start in `dest`, in elements.
    pub t_w2_at: u32,
    pub t_b2_at: u32,
    pub t_b1_at: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct SgdParams {
    pub len: u32,
    pub lr: f32,
    pub _pad: [u32; 2],
}


/// Texels in one row of a mirror: 4096 bytes (2048 in f16), a multiple of the 256 bytes wgpu
/// wants a row of a buffer-to-texture copy to take.
pub const TEXELS_PER_ROW: u32 = 256;

/// What a matmul variant reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Elems {
    /// f32 operands, bias, mask and result.
    F32,
    /// f16 operands, bias and mask, sums in f32, an f16 result (--precision f16's activations
    /// and δ1: matmul_reg8x4.wgsl with `Out = f16`).
    F16,
    /// As F16 with an f32 result (the logits and the weight gradients).
    F16ToF32,
}

impl Elems {
    /// Bytes of one element of A, B, the bias and the mask.
    pub fn operand_bytes(self) -> u64 {
        match self {
            Elems::F32 => 4,
            Elems::F16 | Elems::F16ToF32 => 2,
        }
    }

    /// The WGSL prelude a kernel written over `Elem` (its operands) and `Out` (its result) is
    /// compiled with: one source per kernel for both precisions, the element types chosen at
    /// pipeline creation (WGSL wants `enable f16;` before any declaration, hence a prelude).
    /// `HALF` lets a kernel do what only f16 needs (sgd_update's working copy).
    pub fn prelude(self) -> &'static str {
        match self {
            Elems::F32 => "alias Elem = f32;\nalias Out = f32;\nconst HALF: bool = false;\n",
            Elems::F16 => "enable f16;\nalias Elem = f16;\nalias Out = f16;\nconst HALF: bool = true;\n",
            Elems::F16ToF32 => "enable f16;\nalias Elem = f16;\nalias Out = f32;\nconst HALF: bool = true;\n",
        }
    }

    /// Bytes of one element of C.
    pub fn result_bytes(self) -> u64 {
        match self {
            Elems::F16 => 2,
            Elems::F32 | Elems::F16ToF32 => 4,
        }
    }
}

/// How a variant reads A and B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// One f32 at a time, any strides.
    Scalar,
    /// vec4 along K: needs A and B contiguous in k (a_cs = b_rs = 1) and K, a_rs, b_cs
    /// multiples of 4.
    K4,
    /// vec4 along M (A) and N (B): needs a_rs = b_cs = 1 and M, N, a_cs, b_rs multiples of 4.
    MN4,
}

impl Load {
    /// Whether a product with these shapes and strides can be read this way.
    pub fn fits(self, p: &MatmulParams) -> bool {
        let four = |v: u32| v.is_multiple_of(4);
        match self {
            Load::Scalar => true,
            Load::K4 => p.a_cs == 1 && p.b_rs == 1 && four(p.k) && four(p.a_rs) && four(p.b_cs),
            Load::MN4 => {
                p.a_rs == 1 && p.b_cs == 1 && four(p.m) && four(p.n) && four(p.a_cs) && four(p.b_rs)
            }
        }
    }
}

/// The step's matrix products, each of which may run its own variant: the two large ones. The
/// output layer's product, δ1 and ∂W2 live inside the fused kernels (shaders/head.wgsl,
/// shaders/backward.wgsl), where at 10 classes they are too small to be worth a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// h = ReLU(x·W1ᵀ + b1): (rows × hidden), K = 784.
    Hidden,
    /// ∂W1 = δ1ᵀ·x: (hidden × 784), K = rows.
    GradW1,
}

/// How many [`Site`]s a step has.
pub const SITES: usize = 2;

impl Site {
    pub const ALL: [Site; SITES] = [Site::Hidden, Site::GradW1];

    /// What the product reads and writes in a step of `precision`: under f16, x, W1 and δ1
    /// are f16, h f16 and the weight gradient f32 (plan/table.rs).
    pub fn elems(self, precision: Precision) -> Elems {
        match (precision, self) {
            (Precision::F32, _) => Elems::F32,
            (Precision::F16, Site::Hidden) => Elems::F16,
            (Precision::F16, Site::GradW1) => Elems::F16ToF32,
        }
    }

    /// The product as the engine line and the cache name it.
    pub fn name(self) -> &'static str {
        match self {
            Site::Hidden => "x·W1ᵀ",
            Site::GradW1 => "δ1ᵀ·x",
        }
    }

    /// The product at this site for `rows` images and `hidden` neurons: its shape, layouts
    /// and epilogue, with `(alpha, beta)` for the weight product (1, 0: the gradient;
    /// −lr, 1: the fused update) and `splits` K-slices for the forward one.
    pub fn params(self, rows: u32, hidden: u32, ab: (f32, f32), splits: u32) -> MatmulParams {
        let pix = crate::data::PIXELS as u32;
        match self {
            Site::Hidden => MatmulParams::new(
                (rows, hidden, pix),
                row_major(pix),
                transposed(pix),
                1.0,
                0.0,
                HAS_BIAS | RELU,
                splits,
            ),
            Site::GradW1 => MatmulParams::new(
                (hidden, pix, rows),
                transposed(hidden),
                row_major(pix),
                ab.0,
                ab.1,
                0,
                1,
            ),
        }
    }
}
