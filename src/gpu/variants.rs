//! The family of matmul kernels the start-up search picks from (gpu/autotune), generated
//! from one template with the shape as constants, as tinygrad and Burn generate theirs.
//!
//! Why a family, and why these members. On a CPU adapter (lavapipe/llvmpipe) the "GPU" is the
//! CPU's SIMD lanes: eight invocations run side by side in one AVX register. Mesa 22.3's
//! llvmpipe turns every storage-buffer load into a loop over those eight lanes, each lane
//! loading its value with a bounds check and inserting it into the vector through the stack
//! (gallivm's `emit_load_mem`). So the cost of a product there is its *loads*, not its
//! multiply-adds, and a kernel is fast when each loaded value feeds many multiply-adds. Four
//! ways to get there, combined in the family:
//!
//! Every member adds each sum's products one k at a time in ascending order, as reg8x4 does,
//! so all of them give the same bits (tests/kernels.rs checks): which one the search picks
//! changes the speed of a run, never its numbers.
//!
//! - **Register blocks** (`R`×`C` outputs a thread): each step of k loads R values of A and C
//!   of B for R·C multiply-adds. Bigger blocks load less per multiply-add, until the
//!   accumulators no longer fit in the CPU's registers.
//! - **vec4 loads** (`k4`, `mn4`): one lane loop fetches four values instead of one. `k4`
//!   reads four consecutive k where both operands are contiguous along K (the forward
//!   products: x·W1ᵀ reads rows of x and rows of W1); `mn4` reads four consecutive rows of A
//!   and columns of B where those are contiguous (the weight products: δ1ᵀ·x).
//! - **Subgroup sharing** (`_sg`): the eight lanes of a subgroup work on the same rows of C,
//!   so in a plain kernel all eight load the same value of A, eight times over. Here lane l
//!   loads row l's value and `subgroupBroadcast` hands it to the others: one load where there
//!   were eight, and a broadcast is one register shuffle. (Needs subgroups of exactly 8 lanes
//!   in a row of the 8×8 workgroup, as lavapipe's are; every variant is checked against the CPU
//!   twin before the search may pick it, so an adapter that groups lanes otherwise loses only
//!   the variant.)
//!
//! - **Texture reads** (`t` prefix): the loads that remain are the dearest part, and how dear
//!   depends on the CPU: llvmpipe's per-lane load loop is cheap with AVX-512's mask registers
//!   and several times dearer without them (an AVX2 CPU such as the Zen 3: a whole product
//!   3.5-6× slower here). A texel fetch is
//!   one gather for all lanes either way, so the `t` members read the operands the engine
//!   mirrors into textures (x, W1, δ1: gpu/mirror.rs) through `textureLoad`, as read-only
//!   storage textures (no mip level to look up per lane, as a sampled texture has).
//!
//! Measured by the search on a 2-core Zen 4 VM (BENCHMARKS.md): the hidden layer's product at
//! batch 64 ran in 3.3-4.3 ms with reg8x4 and 0.8-1.1 ms with `k4_8x8_sg` or `tk4_8x8_sg`; with
//! AVX-512 masked off (llvmpipe's code for an AVX2 CPU) 12-17 ms with reg8x4, 6.0 with
//! `k4_8x8_sg` and 0.8-1.2 with `tk4_8x8_sg` (its copies included). So the search, not a rule,
//! picks between them.
//!
//! **f16** (`--precision f16`): each shape also comes reading f16, with an f16 result (`_f16`)
//! and an f32 one (`_f16_f32out`), as reg8x4_f16 and reg8x4_f16_f32out do (where a
//! product can use it): every f16 is widened to f32 as it is loaded, so the rest (sums in k order,
//! broadcasts, the epilogue) is the f32 member's, and every member gives reg8x4_f16's bits
//! (tests/f16.rs).
//!
//! The epilogue is a loop over an array of the sums, not unrolled: unrolled, its copies made the
//! cold compile (which bounds the start-up search) 2-4× slower.
//! On a real GPU none of this applies (loads are wide and cached, lanes many): the search
//! offers these only to CPU adapters.

use super::generate;
use crate::abi::{Elems, Load};

/// Lanes along each side of the 8×8 workgroup (one subgroup of lavapipe's is a row of it).
pub const LANES: u32 = 8;

/// One member of the family, described: the generator writes its WGSL from this, and the
/// registry (gpu/matmul.rs) makes it a [`crate::gpu::matmul::MatmulVariant`] the search can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// How it reads A and B.
    pub load: Load,
    /// Shares A through subgroups of exactly 8 lanes (`_sg`).
    pub shared: bool,
    /// R×C sums a thread.
    pub r: u32,
    pub c: u32,
    /// Reads the mirrored operands through textures (`t`).
    pub tex: bool,
}

impl Shape {
    const fn new(load: Load, shared: bool, r: u32, c: u32, tex: bool) -> Shape {
        Shape { load, shared, r, c, tex }
    }

    /// "tk4_8x8_sg": t for textures, the load, R×C, _sg for subgroup sharing.
    pub fn base_name(&self) -> String {
        let prefix = match self.load {
            Load::Scalar => "reg",
            Load::K4 => "k4_",
            Load::MN4 => "mn4_",
        };
        format!(
            "{}{prefix}{}x{}{}",
            if self.tex { "t" } else { "" },
            self.r,
            self.c,
            if self.shared { "_sg" } else { "" }
        )
    }

    /// The member's name in `elems`: the base name, `_f16` or `_f16_f32out`.
    pub fn name(&self, elems: Elems) -> String {
        match elems {
            Elems::F32 => self.base_name(),
            Elems::F16 => format!("{}_f16", self.base_name()),
            Elems::F16ToF32 => format!("{}_f16_f32out", self.base_name()),
        }
    }

    /// Rows and columns of C one 8×8 workgroup computes.
    pub fn block(&self) -> (u32, u32) {
        (LANES * self.r, LANES * self.c)
    }

    /// Which of A, B and C's old values it reads in `elems` through the engine's texture
    /// mirrors.
    pub fn textures(&self, elems: Elems) -> [bool; 3] {
        textures(self.load, self.tex, elems)
    }

    /// Whether the family has this shape in `elems`. f16 members only where a product can use
    /// them: vec4 rows of C (MN4) only with an f32 C (δ1ᵀ·x, the only product MN4 fits), and
    /// vec4 along K (K4) only with an f16 one (x·W1ᵀ, the only product K4 fits); and not the
    /// 32×4 block, whose f16 compile took 2.9 s on Zen 4 (more than a start-up's whole search)
    /// for a product twice as slow as mn4_16x8_sg_f16_f32out's.
    pub fn comes_in(&self, elems: Elems) -> bool {
        let f16_out = elems == Elems::F16;
        let unused = match self.load {
            Load::MN4 => f16_out || (self.r, self.c) == (32, 4),
            Load::K4 => !f16_out,
            Load::Scalar => false,
        };
        elems == Elems::F32 || !unused
    }

    /// The WGSL of this member reading and writing `elems` ([`wgsl`]).
    pub fn wgsl(&self, elems: Elems) -> String {
        generate::wgsl((self.load, self.shared, self.r, self.c, self.textures(elems)), elems)
    }
}

/// The generated members, in the order the search tries them (the likeliest winners on
/// lavapipe first: a search bounded in time may stop before the end, and goes on from there
/// next run). Left out after measuring: blocks of 256 sums a thread (mn4_32x8_sg took 20 s to
/// compile on Zen 4 and was no faster), and workgroups of 64×1 (no faster than 8×8: lavapipe's
/// subgroup is 8 lanes either way).
pub const SHAPES: [Shape; 17] = [
    Shape::new(Load::K4, true, 8, 8, true),
    Shape::new(Load::MN4, true, 16, 8, true),
    Shape::new(Load::K4, true, 8, 8, false),
    Shape::new(Load::MN4, true, 16, 8, false),
    Shape::new(Load::K4, false, 8, 4, true),
    Shape::new(Load::K4, false, 8, 8, true),
    Shape::new(Load::MN4, false, 8, 8, true),
    Shape::new(Load::MN4, true, 16, 4, true),
    Shape::new(Load::Scalar, true, 16, 4, false),
    Shape::new(Load::K4, true, 16, 8, false),
    Shape::new(Load::Scalar, true, 16, 8, false),
    Shape::new(Load::K4, true, 16, 4, false),
    Shape::new(Load::K4, false, 4, 4, true),
    Shape::new(Load::MN4, false, 16, 4, false),
    Shape::new(Load::K4, false, 8, 8, false),
    Shape::new(Load::MN4, false, 16, 8, false),
    Shape::new(Load::MN4, true, 32, 4, false),
];

/// Which of A, B and C's old values a member reads through the engine's texture mirrors
/// (gpu/mirror.rs): A and B, in x·W1ᵀ (x and W1) and δ1ᵀ·x (δ1 and x); and an f32 MN4 member
/// (only δ1ᵀ·x fits MN4) C's old values too, the W1 the update adds to. On llvmpipe that
/// read was a third of the whole product: 100,352 values, each loaded lane by lane with
/// K only 64 sums to spread it over (BENCHMARKS.md, issue 31).
fn textures(load: Load, tex: bool, elems: Elems) -> [bool; 3] {
    match (load, tex) {
        (_, false) => [false; 3],
        (Load::K4, true) => [true, true, false],
        (Load::MN4, true) => [true, true, elems == Elems::F32],
        (Load::Scalar, true) => panic!("texture mirrors hold vec4s: no scalar member reads them"),
    }
}

