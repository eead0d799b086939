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
//!   mirrors into textures (x, W1, δ1: gpu/mirror.rs) through `textureLoad`.
//!
//! Measured by the search on a 2-core Zen 4 VM (BENCHMARKS.md): the hidden layer's product at
//! batch 64 ran in 3.3-4.3 ms with reg8x4 and 0.8-1.1 ms with `k4_8x8_sg` or `tk4_8x8_sg`; with
//! AVX-512 masked off (llvmpipe's code for an AVX2 CPU) 12-17 ms with reg8x4, 6.0 with
//! `k4_8x8_sg` and 0.8-1.2 with `tk4_8x8_sg` (its copies included). So the search, not a rule,
//! picks between them.
//!
//! **f16** (`--precision f16`): each shape also comes reading f16, with an f16 result (`_f16`)
//! and an f32 one (`_f16_f32out`), as matmul_f16.wgsl and its f32out sibling do (where a
//! product can use it): every f16 is widened to f32 as it is loaded, so the rest (sums in k order,
//! broadcasts, the epilogue) is the f32 member's, and every member gives reg8x4_f16's bits
//! (tests/f16.rs).
//!
//! The epilogue is a loop over an array of the sums, not unrolled: unrolled, its copies made the
//! cold compile (which bounds the start-up search) 2-4× slower.
//! On a real GPU none of this applies (loads are wide and cached, lanes many): the search
//! offers these only to CPU adapters.

use crate::abi::{Elems, Load, TEXELS_PER_ROW};

/// Lanes along each side of the 8×8 workgroup (one subgroup of lavapipe's is a row of it).
const LANES: u32 = 8;

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

    /// Which of A and B it reads through the engine's texture mirrors.
    pub fn textures(&self) -> [bool; 2] {
        textures(self.load, self.tex)
    }

    /// Whether the family has this shape in `elems`. f16 members only where a product can use
    /// them: vec4 rows of C (MN4) only with an f32 C (the weight products, the only ones MN4
    /// fits), and K4 texture members only with an f16 one (x·W1ᵀ, the only K4 product with
    /// mirrored operands); and not the 32×4 block, whose f16 compile took 2.9 s on Zen 4 (more
    /// than a start-up's whole search) for a product twice as slow as mn4_16x8_sg_f16_f32out's.
    pub fn comes_in(&self, elems: Elems) -> bool {
        let f16_out = elems == Elems::F16;
        let unused = match self.load {
            Load::MN4 => f16_out || (self.r, self.c) == (32, 4),
            Load::K4 => self.tex && !f16_out,
            Load::Scalar => false,
        };
        elems == Elems::F32 || !unused
    }

    /// The WGSL of this member reading and writing `elems` ([`wgsl`]).
    pub fn wgsl(&self, elems: Elems) -> String {
        wgsl((self.load, self.shared, self.r, self.c, self.tex), elems)
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

/// Which of A and B a member reads through the engine's texture mirrors (gpu/mirror.rs):
/// both, in x·W1ᵀ (x and W1) and δ1ᵀ·x (δ1 and x).
fn textures(load: Load, tex: bool) -> [bool; 2] {
    match (load, tex) {
        (_, false) => [false, false],
        (Load::K4 | Load::MN4, true) => [true, true],
        (Load::Scalar, true) => panic!("texture mirrors hold vec4s: no scalar member reads them"),
    }
}

/// The WGSL of one member: matmul.wgsl's bindings, Params and epilogue; its own blocking;
/// with `tex`, the mirrored operands read through textures; with f16 `elems`, A, B, the bias
/// and the mask read as f16 and widened to f32 as they are loaded (so the sums, the
/// subgroup broadcasts and the epilogue are the f32 member's), C stored as `elems` says.
fn wgsl((load, shared, r, c, tex): (Load, bool, u32, u32, bool), elems: Elems) -> String {
    let tex = textures(load, tex);
    assert!(
        !shared || r % 8 == 0 || load == Load::MN4,
        "shared rows come 8 (or 4×8) a load"
    );
    assert!(load != Load::MN4 || (r % 4 == 0 && c % 4 == 0));
    // Written over `Elem` and `Out`, which the prelude defines (abi::Elems::prelude): under f16
    // every load is widened to f32 explicitly.
    let half = elems != Elems::F32;
    let scalar = "Elem";
    let vec = |v: bool| match v {
        true => format!("vec4<{scalar}>"),
        false => scalar.to_string(),
    };
    let result = "Out";
    let mut s = String::new();
    let w = |s: &mut String, line: &str| {
        s.push_str(line);
        s.push('\n');
    };
    w(
        &mut s,
        &format!(
            "// Generated by src/gpu/variants.rs: load {load:?}, A shared through the subgroup: \
             {shared}, {r}×{c} outputs a thread, 8×8 threads, A and B through textures: {tex:?}, \
             elements {elems:?}."
        ),
    );
    let bindings = params_and_bindings()
        .replace("ELEM", &vec(load != Load::Scalar))
        // MN4: four consecutive columns a sum vector, so C is read and written a vec4 at a time.
        .replace(
            "c: array<Out>",
            &match load {
                Load::MN4 => format!("c: array<vec4<{result}>>"),
                _ => format!("c: array<{result}>"),
            },
        );
    s.push_str(&bindings);
    for (i, name) in ["a", "b"].iter().enumerate().filter(|(i, _)| tex[*i]) {
        // The mirror of binding `name`: vec4 i at texel (i % 256, i / 256) (gpu/mirror.rs).
        let row = TEXELS_PER_ROW;
        w(
            &mut s,
            &format!(
                "@group(0) @binding({}) var t{name}: texture_2d<f32>;\n\
                 fn load_{name}(i: u32) -> vec4<f32> {{\n    \
                 return textureLoad(t{name}, vec2<u32>(i % {row}u, i / {row}u), 0);\n}}",
                6 + i
            ),
        );
    }
    w(&mut s, "@compute @workgroup_size(8, 8)");
    w(
        &mut s,
        "fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {",
    );
    for (_, name) in ["a", "b"].iter().enumerate().filter(|(i, _)| tex[*i]) {
        // Read through its texture, but kept in the bindings (and so in the layout wgpu
        // deduces), which every variant shares.
        w(&mut s, &format!("    _ = arrayLength(&{name});"));
    }
    // Which rows and columns of C this thread holds.
    let (row, col) = coordinates(&mut s, load, shared, r, c);
    declare_offsets(&mut s, load, shared, r, c);
    // One variable per accumulator, never an indexed array: an array indexed at run time
    // would live in memory, and every multiply-add would load and store it.
    let (acc_type, acc_cols) = match load {
        Load::MN4 => ("vec4<f32>", c / 4),
        _ => ("f32", c),
    };
    for i in 0..r {
        for j in 0..acc_cols {
            w(&mut s, &format!("    var acc{i}_{j}: {acc_type};"));
        }
    }
    let step = if load == Load::K4 { "4u" } else { "1u" };
    w(
        &mut s,
        &format!("    for (var kk = 0u; kk < params.k; kk += {step}) {{"),
    );
    inner_step(&mut s, (load, shared, tex, half), r, c);
    w(&mut s, "    }");
    // The epilogue, as a loop over the sums (MN4: over vec4s of four columns' sums): the
    // accumulators go into an array first. Unrolled, its R·C copies of `finish` made the cold
    // compile 2-4× slower (and a cold compile is what bounds the start-up search).
    w(
        &mut s,
        &format!("    var sums: array<{acc_type}, {}>;", r * acc_cols),
    );
    for i in 0..r {
        for j in 0..acc_cols {
            w(
                &mut s,
                &format!("    sums[{}] = acc{i}_{j};", i * acc_cols + j),
            );
        }
    }
    let per_call = c / acc_cols;
    w(&mut s, &format!("    for (var i = 0u; i < {r}u; i++) {{"));
    w(
        &mut s,
        &format!("        for (var jj = 0u; jj < {acc_cols}u; jj++) {{"),
    );
    w(&mut s, &format!("            let j = jj * {per_call}u;"));
    w(
        &mut s,
        &format!("            finish({row}, {col}, sums[i * {acc_cols}u + jj]);"),
    );
    w(&mut s, "        }");
    w(&mut s, "    }");
    w(&mut s, "}");
    let epilogue = if load == Load::MN4 {
        EPILOGUE4
    } else {
        EPILOGUE
    };
    s.push_str(&epilogue_in(epilogue, elems));
    s
}

/// `epilogue` (written for f32) for `elems`: the bias, the mask and C read as f16 are widened
/// to f32 first (exactly: every f16 is an f32), and an f16 C is stored rounded to f16, as
/// matmul_f16.wgsl does.
fn epilogue_in(epilogue: &str, elems: Elems) -> String {
    let mut e = epilogue.to_string();
    if elems == Elems::F32 {
        return e;
    }
    for q in ["", " + 1u", " + 2u", " + 3u"] {
        e = e.replace(&format!("bias[col{q}]"), &format!("f32(bias[col{q}])"));
        e = e.replace(&format!("mask[idx{q}]"), &format!("f32(mask[idx{q}])"));
    }
    if elems == Elems::F16 {
        e = e
            .replace("params.beta * c[idx]", "params.beta * f32(c[idx])")
            .replace("c[idx] = v;", "c[idx] = Out(v);")
            .replace(
                "params.beta * c[idx / 4u]",
                "params.beta * vec4<f32>(c[idx / 4u])",
            )
            .replace("c[idx / 4u] = v;", "c[idx / 4u] = vec4<Out>(v);");
    }
    e
}

/// Declares row0/col0 and returns the expressions of row(i) and col(j).
fn coordinates(s: &mut String, load: Load, shared: bool, r: u32, c: u32) -> (String, String) {
    let (row0, row) = match (load, shared) {
        // The subgroup (a row of the workgroup) shares R consecutive rows.
        (_, true) => (
            format!("(wid.y * 8u + lid.y) * {r}u"),
            "row0 + i".to_string(),
        ),
        // Groups of 4 consecutive rows, 32 apart.
        (Load::MN4, false) => (
            format!("(wid.y * {}u + lid.y) * 4u", 8 * r / 4),
            "row0 + (i / 4u) * 32u + i % 4u".to_string(),
        ),
        _ => (
            format!("wid.y * {}u + lid.y", 8 * r),
            "row0 + i * 8u".to_string(),
        ),
    };
    let (col0, col) = match load {
        Load::MN4 => (
            format!("(wid.x * {}u + lid.x) * 4u", 8 * c / 4),
            "col0 + (j / 4u) * 32u + j % 4u".to_string(),
        ),
        _ => (
            format!("wid.x * {}u + lid.x", 8 * c),
            "col0 + j * 8u".to_string(),
        ),
    };
    s.push_str(&format!("    let row0 = {row0};\n    let col0 = {col0};\n"));
    (row, col)
}

/// The clamped offsets of the rows of A and columns of B this lane loads (clamped to the
/// matrix, so no load is out of bounds; sums past the edge are never written).
fn declare_offsets(s: &mut String, load: Load, shared: bool, r: u32, c: u32) {
    let mut w = |line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    match (load, shared) {
        (Load::MN4, true) => {
            // Lane l loads rows 4l..4l+3 of each group of 32.
            for g in 0..r.div_ceil(32) {
                w(format!(
                    "    let ar{g} = min(row0 + {}u + 4u * lid.x, params.m - 4u);",
                    32 * g
                ));
            }
        }
        (Load::MN4, false) => {
            for g in 0..r / 4 {
                w(format!(
                    "    let ar{g} = min(row0 + {}u, params.m - 4u);",
                    32 * g
                ));
            }
        }
        (_, true) => {
            // Lane l loads row l of each group of 8.
            for g in 0..r / 8 {
                w(format!(
                    "    let ar{g} = min(row0 + {}u + lid.x, params.m - 1u) * params.a_rs;",
                    8 * g
                ));
            }
        }
        (_, false) => {
            for i in 0..r {
                w(format!(
                    "    let ar{i} = min(row0 + {}u, params.m - 1u) * params.a_rs;",
                    8 * i
                ));
            }
        }
    }
    match load {
        Load::MN4 => {
            for h in 0..c / 4 {
                w(format!(
                    "    let bc{h} = min(col0 + {}u, params.n - 4u);",
                    32 * h
                ));
            }
        }
        _ => {
            for j in 0..c {
                w(format!(
                    "    let bc{j} = min(col0 + {}u, params.n - 1u) * params.b_cs;",
                    8 * j
                ));
            }
        }
    }
}

/// One step of k (four with K4): the loads, the broadcasts, the multiply-adds, unrolled.
fn inner_step(
    s: &mut String,
    (load, shared, tex, half): (Load, bool, [bool; 2], bool),
    r: u32,
    c: u32,
) {
    let read = |name: &str, i: usize, index: String| match (tex[i], half, load) {
        (true, _, _) => format!("load_{name}({index})"),
        (false, false, _) => format!("{name}[{index}]"),
        // f16 widened to f32 as it is loaded: exact, and everything after is the f32 member's.
        (false, true, Load::Scalar) => format!("f32({name}[{index}])"),
        (false, true, _) => format!("vec4<f32>({name}[{index}])"),
    };
    let mut w = |line: String| {
        s.push_str("        ");
        s.push_str(&line);
        s.push('\n');
    };
    // The loads this lane makes.
    let a_index = |off: String| match load {
        Load::Scalar => format!("{off} + kk * params.a_cs"),
        Load::K4 => format!("({off} + kk) / 4u"),
        Load::MN4 => format!("(kk * params.a_cs + {off}) / 4u"),
    };
    let loaded_a = match (load, shared) {
        (Load::MN4, true) => r.div_ceil(32),
        (Load::MN4, false) => r / 4,
        (_, true) => r / 8,
        (_, false) => r,
    };
    for g in 0..loaded_a {
        w(format!(
            "let al{g} = {};",
            read("a", 0, a_index(format!("ar{g}")))
        ));
    }
    let b_count = if load == Load::MN4 { c / 4 } else { c };
    for j in 0..b_count {
        let index = match load {
            Load::Scalar => format!("kk * params.b_rs + bc{j}"),
            Load::K4 => format!("(bc{j} + kk) / 4u"),
            Load::MN4 => format!("(kk * params.b_rs + bc{j}) / 4u"),
        };
        w(format!("let b{j} = {};", read("b", 1, index)));
    }
    // Row i's value of A (a vec4 of k with K4; with MN4 a scalar out of a vec4 of rows).
    for i in 0..r {
        let a = match (load, shared) {
            (Load::MN4, true) => {
                let (g, lane, q) = (i / 32, (i % 32) / 4, i % 4);
                if q == 0 {
                    w(format!(
                        "let av{g}_{lane} = subgroupBroadcast(al{g}, {lane}u);"
                    ));
                }
                format!("av{g}_{lane}[{q}]")
            }
            (Load::MN4, false) => format!("al{}[{}]", i / 4, i % 4),
            (_, true) => format!("subgroupBroadcast(al{}, {}u)", i / 8, i % 8),
            (_, false) => format!("al{i}"),
        };
        w(format!("let a{i} = {a};"));
        for j in 0..b_count {
            if load == Load::K4 {
                // One k at a time, in order (not dot(), whose additions may be reordered):
                // every sum then rounds exactly as reg8x4's does.
                for q in ["x", "y", "z", "w"] {
                    w(format!("acc{i}_{j} += a{i}.{q} * b{j}.{q};"));
                }
            } else {
                w(format!("acc{i}_{j} += a{i} * b{j};"));
            }
        }
    }
}

/// matmul_reg8x4.wgsl's Params, epilogue flags and bindings, sliced from the file itself (one
/// copy to keep in step with the Rust side, which tests/kernels.rs checks), with A's and B's
/// element type left as ELEM.
fn params_and_bindings() -> String {
    let src = include_str!("../../shaders/matmul_reg8x4.wgsl");
    let slice = |from: &str, to: &str| {
        let start = src
            .find(from)
            .expect("matmul_reg8x4.wgsl has its Params and bindings");
        let end = start + src[start..].find(to).expect("and what follows them");
        &src[start..end]
    };
    let params = slice("struct Params {", "// 8 threads along each side");
    let bindings = slice("@group(0) @binding(0)", "@compute")
        .replace("a: array<Elem>", "a: array<ELEM>")
        .replace("b: array<Elem>", "b: array<ELEM>");
    format!("\n{params}{bindings}")
}

/// matmul.wgsl's epilogue, for one sum of the thread's block.
const EPILOGUE: &str = "
fn finish(row: u32, col: u32, sum: f32) {
    if row >= params.m || col >= params.n {
        return;
    }
    let idx = row * params.n + col;
    var v = params.alpha * sum;
    if params.beta != 0.0 {
        v += params.beta * c[idx];
    }
    if (params.flags & HAS_BIAS) != 0u {
        v += bias[col];
    }
    if (params.flags & RELU) != 0u {
        v = max(v, 0.0);
    }
    if (params.flags & MASK) != 0u && mask[idx] <= 0.0 {
        v = 0.0;
    }
    c[idx] = v;
}
";

/// [`EPILOGUE`] for four consecutive columns at once (N is a multiple of 4 with MN4, so the
/// four are all inside C or all outside): one vec4 load and store of C where there were four.
/// Each component is computed as the scalar epilogue computes it.
const EPILOGUE4: &str = "
fn finish(row: u32, col: u32, sum: vec4<f32>) {
    if row >= params.m || col >= params.n {
        return;
    }
    let idx = row * params.n + col;
    var v = params.alpha * sum;
    if params.beta != 0.0 {
        v += params.beta * c[idx / 4u];
    }
    if (params.flags & HAS_BIAS) != 0u {
        v += vec4<f32>(bias[col], bias[col + 1u], bias[col + 2u], bias[col + 3u]);
    }
    if (params.flags & RELU) != 0u {
        v = max(v, vec4<f32>(0.0));
    }
    if (params.flags & MASK) != 0u {
        let m = vec4<f32>(mask[idx], mask[idx + 1u], mask[idx + 2u], mask[idx + 3u]);
        v = select(v, vec4<f32>(0.0), m <= vec4<f32>(0.0));
    }
    c[idx / 4u] = v;
}
";
