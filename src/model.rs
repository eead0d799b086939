//! The network: 784 inputs -> 128 ReLU neurons -> 10 logits -> SoftMax, with cross-entropy loss.
//!
//! Weights are stored the way PyTorch's `nn.Linear` stores them, (out, in) row-major, so that
//! `hidden.weight` is (128, 784) and `output.weight` is (10, 128). Every count and byte size the
//! program reports is computed here from these shapes.

use crate::data::{CLASSES, PIXELS};
use rand::{Rng, SeedableRng};

/// One fully connected layer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    pub name: &'static str,
    pub inputs: usize,
    pub outputs: usize,
}

impl LayerShape {
    pub fn weights(&self) -> usize {
        self.inputs * self.outputs
    }
    pub fn biases(&self) -> usize {
        self.outputs
    }
}

/// Neurons in the hidden layer: the chapter's 128, the default of `--hidden`.
pub const HIDDEN: usize = 128;
/// The widest hidden layer this trainer takes (--hidden, --init and snapshots alike).
pub const MAX_HIDDEN: usize = 4096;

/// The two layers of a network with `hidden` hidden neurons (`--hidden`).
pub fn layers(hidden: usize) -> [LayerShape; 2] {
    [
        LayerShape {
            name: "hidden",
            inputs: PIXELS,
            outputs: hidden,
        },
        LayerShape {
            name: "output",
            inputs: hidden,
            outputs: CLASSES,
        },
    ]
}

/// The two layers of the chapter's network, in order.
pub const LAYERS: [LayerShape; 2] = [
    LayerShape {
        name: "hidden",
        inputs: PIXELS,
        outputs: HIDDEN,
    },
    LayerShape {
        name: "output",
        inputs: HIDDEN,
        outputs: CLASSES,
    },
];

/// Weight counts, bias counts and their memory, derived from [`LAYERS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub layer_weights: Vec<(String, usize)>,
    pub weights: usize,
    pub biases: usize,
}

impl Summary {
    pub fn of(layers: &[LayerShape]) -> Self {
        Summary {
            layer_weights: layers
                .iter()
                .map(|l| {
                    (
                        format!("{} ({}x{})", l.name, l.outputs, l.inputs),
                        l.weights(),
                    )
                })
                .collect(),
            weights: layers.iter().map(|l| l.weights()).sum(),
            biases: layers.iter().map(|l| l.biases()).sum(),
        }
    }

    /// Bytes the weights take at `bytes_per_value` (2 = FP16, 4 = FP32, 8 = FP64).
    pub fn weight_bytes(&self, bytes_per_value: usize) -> usize {
        self.weights * bytes_per_value
    }

    /// The summary as the program prints it.
    pub fn render(&self) -> String {
        let hidden = self.biases - CLASSES;
        let mut s = format!("model: 784 -> {hidden} ReLU -> 10 -> SoftMax, cross-entropy loss\n");
        let parts: Vec<String> = self
            .layer_weights
            .iter()
            .map(|(n, w)| format!("{} {n}", thousands(*w)))
            .collect();
        s += &format!(
            "  weights: {} = {}\n  biases:  {}\n",
            parts.join(" + "),
            thousands(self.weights),
            thousands(self.biases)
        );
        for (name, b) in [("FP16", 2), ("FP32", 4), ("FP64", 8)] {
            s += &format!(
                "  weights in {name}: {} bytes ({} with biases)\n",
                thousands(self.weight_bytes(b)),
                thousands((self.weights + self.biases) * b)
            );
        }
        s
    }
}

/// 101632 -> "101,632".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The parameters, FP32, (out, in) row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// (128, 784)
    pub w1: Vec<f32>,
    /// (128)
    pub b1: Vec<f32>,
    /// (10, 128)
    pub w2: Vec<f32>,
    /// (10)
    pub b2: Vec<f32>,
}

impl Model {
    /// The parameters as one flat array in [`ParamLayout`] `layout` (padding zeroed).
    pub fn to_flat(&self, layout: &ParamLayout) -> Vec<f32> {
        let mut flat = vec![0.0; layout.total];
        for (i, (_, _, data)) in self.tensors().iter().enumerate() {
            flat[layout.range(i)].copy_from_slice(data);
        }
        flat
    }

    /// The inverse of [`Model::to_flat`].
    pub fn from_flat(flat: &[f32], layout: &ParamLayout) -> Model {
        let part = |i: usize| flat[layout.range(i)].to_vec();
        Model {
            w1: part(0),
            b1: part(1),
            w2: part(2),
            b2: part(3),
        }
    }

    /// An FNV-1a hash of every parameter's bits: replicas that hold the same weights, bit for
    /// bit, have the same hash.
    pub fn bit_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for (_, _, data) in self.tensors() {
            for v in data {
                for b in v.to_bits().to_le_bytes() {
                    h = (h ^ b as u64).wrapping_mul(0x100000001b3);
                }
            }
        }
        h
    }

    /// PyTorch's `nn.Linear` default initialisation: every weight and bias of a layer drawn
    /// uniformly from ±1/√fan_in (fan_in = the layer's inputs), from a ChaCha8 RNG seeded by `seed`.
    pub fn init(seed: u64) -> Self {
        Self::init_with(seed, HIDDEN)
    }

    /// [`Model::init`] for a hidden layer of `hidden` neurons.
    pub fn init_with(seed: u64, hidden: usize) -> Self {
        let [l1, l2] = layers(hidden);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut layer = |l: LayerShape| {
            let bound = 1.0 / (l.inputs as f32).sqrt();
            let w: Vec<f32> = (0..l.weights())
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let b: Vec<f32> = (0..l.biases())
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            (w, b)
        };
        let (w1, b1) = layer(l1);
        let (w2, b2) = layer(l2);
        Model { w1, b1, w2, b2 }
    }

    /// Neurons in the hidden layer.
    pub fn hidden(&self) -> usize {
        self.b1.len()
    }

    /// The tensors with their conventional (PyTorch) names and shapes.
    pub fn tensors(&self) -> [(&'static str, Vec<usize>, &[f32]); 4] {
        [
            ("hidden.weight", vec![self.hidden(), PIXELS], &self.w1),
            ("hidden.bias", vec![self.hidden()], &self.b1),
            ("output.weight", vec![CLASSES, self.hidden()], &self.w2),
            ("output.bias", vec![CLASSES], &self.b2),
        ]
    }

    /// Largest absolute difference between two models' parameters.
    pub fn max_abs_diff(&self, other: &Model) -> f32 {
        self.tensors()
            .iter()
            .zip(other.tensors().iter())
            .flat_map(|(a, b)| a.2.iter().zip(b.2.iter()).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f32::max)
    }
}

/// Where each parameter tensor sits in one flat buffer, in the snapshot's order
/// (hidden.weight, hidden.bias, output.weight, output.bias). The gradient uses the same layout,
/// so "parameter i" and "gradient i" are the same index: that is what lets one kernel apply
/// `w −= lr·g` to every parameter, and an all-reduce sum the gradients as one flat array.
///
/// On a GPU each tensor is bound as a sub-range of the flat buffer, and a sub-range must start
/// at a multiple of the adapter's `min_storage_buffer_offset_alignment` (up to 256 bytes):
/// [`ParamLayout::aligned`] pads each tensor's start up to it. For this model the packed
/// offsets (0, 401,408, 401,920 and 407,040 bytes) are already multiples of 256, so the padding
/// is zero; the test below says so, and the code still pads for a shape where it would not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLayout {
    /// Offset of each tensor, in f32 elements.
    pub offsets: [usize; 4],
    /// Length of each tensor, in f32 elements.
    pub lens: [usize; 4],
    /// Elements of the whole buffer, padding included.
    pub total: usize,
}

/// The parameter tensors' lengths, in the snapshot's order, for the default width.
pub const TENSOR_LENS: [usize; 4] = tensor_lens(HIDDEN);

/// The parameter tensors' lengths for a hidden layer of `hidden` neurons.
pub const fn tensor_lens(hidden: usize) -> [usize; 4] {
    [hidden * PIXELS, hidden, CLASSES * hidden, CLASSES]
}
/// Every parameter of the model: 101,632 weights + 138 biases.
pub const PARAMS: usize = TENSOR_LENS[0] + TENSOR_LENS[1] + TENSOR_LENS[2] + TENSOR_LENS[3];

impl ParamLayout {
    /// No padding, the default width: the layout of a host gradient and of the all-reduce's
    /// messages.
    pub fn packed() -> Self {
        Self::packed_for(HIDDEN)
    }

    /// No padding, `hidden` hidden neurons.
    pub fn packed_for(hidden: usize) -> Self {
        Self::aligned_for(4, 4, hidden)
    }

    /// Each tensor starts at a multiple of `align_bytes` (a multiple of 4), f32 elements, the
    /// default width.
    pub fn aligned(align_bytes: usize) -> Self {
        Self::aligned_for(align_bytes, 4, HIDDEN)
    }

    /// Each tensor starts at a multiple of `align_bytes`, for elements of `elem_bytes` bytes
    /// (2: the f16 working copy of --precision f16) and `hidden` hidden neurons.
    pub fn aligned_for(align_bytes: usize, elem_bytes: usize, hidden: usize) -> Self {
        let align = (align_bytes / elem_bytes).max(1);
        let lens = tensor_lens(hidden);
        let mut offsets = [0; 4];
        let mut at = 0usize;
        for (i, len) in lens.iter().enumerate() {
            at = at.div_ceil(align) * align;
            offsets[i] = at;
            at += len;
        }
        ParamLayout {
            offsets,
            lens,
            total: at,
        }
    }

    /// The elements of tensor `i`.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.offsets[i]..self.offsets[i] + self.lens[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_the_shapes() {
        let s = Summary::of(&LAYERS);
        // The chapter's figures, as it prints them: the shapes must produce these, so a wrong
        // formula (or a wrong shape) fails here rather than agreeing with itself.
        assert_eq!(s.layer_weights[0].1, 100_352);
        assert_eq!(s.layer_weights[1].1, 1_280);
        assert_eq!(s.weights, 101_632);
        assert_eq!(s.biases, 138);
        assert_eq!(s.weight_bytes(4), 406_528);
        assert_eq!(s.weight_bytes(2), 203_264);
        assert_eq!(s.weight_bytes(8), 813_056);
        let m = Model::init(1);
        let stored: usize = m.tensors().iter().map(|t| t.2.len()).sum();
        assert_eq!(stored, s.weights + s.biases);
        for (_, shape, data) in m.tensors() {
            assert_eq!(shape.iter().product::<usize>(), data.len());
        }
    }

    #[test]
    fn flat_layout_follows_the_snapshot_order() {
        let packed = ParamLayout::packed();
        assert_eq!(packed.total, PARAMS);
        assert_eq!(
            PARAMS,
            Summary::of(&LAYERS).weights + Summary::of(&LAYERS).biases
        );
        // At WebGPU's largest offset alignment, 256 bytes, this model needs no padding.
        assert_eq!(ParamLayout::aligned(256), packed);
        // A coarser alignment pads every tensor's start and keeps the order.
        let wide = ParamLayout::aligned(4096);
        for i in 0..4 {
            assert_eq!(wide.offsets[i] % 1024, 0);
            assert!(i == 0 || wide.offsets[i] >= wide.offsets[i - 1] + wide.lens[i - 1]);
        }
        let m = Model::init(3);
        assert_eq!(Model::from_flat(&m.to_flat(&wide), &wide), m);
        assert_eq!(m.bit_hash(), Model::init(3).bit_hash());
        assert_ne!(m.bit_hash(), Model::init(4).bit_hash());
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let a = Model::init(7);
        assert_eq!(a, Model::init(7));
        assert_ne!(a, Model::init(8));
        let bound = 1.0 / (PIXELS as f32).sqrt();
        assert!(a.w1.iter().all(|w| w.abs() <= bound));
        assert!(
            a.w2.iter().any(|w| w.abs() > bound),
            "layer 2 uses its own fan-in"
        );
    }

    #[test]
    fn thousands_separator() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(138), "138");
        assert_eq!(thousands(1280), "1,280");
        assert_eq!(thousands(406528), "406,528");
    }
}
