//! The data-parallel step, computed: what one replica sends in a ring all-reduce, from the
//! shapes and from a real step on real images.

use crate::data::{Dataset, CLASSES};
use crate::model::{Model, Summary, LAYERS};
use std::fmt::Write;

/// The numbers of the data-parallel example, computed.
#[derive(Debug, Clone, PartialEq)]
pub struct DataParallelExample {
    pub replicas: usize,
    pub global_batch: usize,
    /// Values one replica sends and receives per step: one gradient per parameter.
    pub gradient_values: usize,
    pub gradient_bytes: usize,
    /// Bytes one replica sends per step in a ring all-reduce, for 2, 4 and 8 replicas.
    pub ring_bytes: Vec<(usize, u64)>,
    /// Error terms δ (hidden + output neurons × this replica's examples) that stay local.
    pub local_deltas: usize,
    /// Largest |difference| between the replicas' all-reduced gradient and the gradient of one
    /// device on the whole global batch.
    pub max_difference: f32,
    /// Largest gradient value, for scale.
    pub max_gradient: f32,
}

/// Runs one data-parallel step on real images: `replicas` CPU replicas each compute the
/// gradient of their share of a global batch of the training default (64 images, the
/// chapter's mini-batch), the ring sums them, and the sum is set beside one device's gradient
/// on the whole batch.
pub fn data_parallel_example(
    model: &Model,
    data: &Dataset,
    replicas: usize,
) -> DataParallelExample {
    use crate::cpu::engine::CpuEngine;
    use crate::engine::Engine;
    use crate::model::ParamLayout;
    use crate::parallel::ring::Ring;
use crate::parallel::all_reduce::{part, AllReduce};
    let global = crate::config::DEFAULT_BATCH.min(data.len());
    let batch: Vec<u32> = (0..global as u32).collect();
    let packed = ParamLayout::packed_for(model.hidden());
    let params = packed.total;
    let gradient = |engine: &mut CpuEngine, rows: &[u32]| {
        let mut g = vec![0.0f32; packed.total];
        engine
            .step(
                data,
                rows,
                crate::engine::Target::Gradient {
                    global_rows: global,
                    loss_scale: 1.0,
                },
            )
            .and_then(|_| engine.read_gradient(0..packed.total, &mut g))
            .expect("the CPU engine does not fail");
        g
    };
    let mut one = CpuEngine::new(model.clone(), 1);
    let want = gradient(&mut one, &batch);
    let mut grads: Vec<Vec<f32>> = (0..replicas)
        .map(|r| {
            gradient(
                &mut CpuEngine::new(model.clone(), 1),
                &batch[part(global, replicas, r)],
            )
        })
        .collect();
    let mut views: Vec<&mut [f32]> = grads.iter_mut().map(|g| g.as_mut_slice()).collect();
    let traffic = Ring::new(replicas)
        .all_reduce(0, &mut views)
        .expect("in-process ring");
    let max_difference = grads[0]
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let ring_bytes = [2usize, 4, 8]
        .iter()
        .map(|&n| {
            let mut g: Vec<Vec<f32>> = vec![vec![0.0; params]; n];
            let mut v: Vec<&mut [f32]> = g.iter_mut().map(|g| g.as_mut_slice()).collect();
            let t = Ring::new(n).all_reduce(0, &mut v).expect("in-process ring");
            (n, t[0].sent)
        })
        .collect();
    let _ = traffic;
    DataParallelExample {
        replicas,
        global_batch: global,
        gradient_values: params,
        gradient_bytes: params * 4,
        ring_bytes,
        local_deltas: (global / replicas) * (model.hidden() + CLASSES),
        max_difference,
        max_gradient: want.iter().fold(0.0, |m, v| m.max(v.abs())),
    }
}

/// The chapter's data-parallel example (Figures 2-12 and 3-7), computed, with the places where
/// the text's arithmetic differs.
pub fn data_parallel(model: &Model, data: &Dataset) -> String {
    use crate::model::thousands;
    let e = data_parallel_example(model, data, 2);
    let per = e.global_batch / e.replicas;
    let mut s = String::from("Data parallelism (chapter 3, Figures 2-12 and 3-7), computed\n");
    let _ = writeln!(
        s,
        "{} replicas, each with its own copy of the weights and {per} of a global batch of {} images:",
        e.replicas, e.global_batch
    );
    let _ = writeln!(
        s,
        "  each replica: forward pass, SoftMax, δ2 = (p − onehot)/{} (the GLOBAL batch), δ1 = (W2ᵀ·δ2) ⊙ ReLU′,",
        e.global_batch
    );
    let _ = writeln!(
        s,
        "  and the gradient of every parameter: {} values, {} bytes in FP32, whatever the batch size.",
        thousands(e.gradient_values),
        thousands(e.gradient_bytes)
    );
    let _ = writeln!(
        s,
        "  synchronised: those {} weight and bias gradients, summed over the replicas by an all-reduce;",
        thousands(e.gradient_values)
    );
    let _ = writeln!(
        s,
        "    since each replica divided by the global batch, the sum IS the average over all {} images.",
        e.global_batch
    );
    let _ = writeln!(
        s,
        "  kept local: each image's error terms δ ({per} images × 138 neurons = {} values per replica);",
        thousands(e.local_deltas)
    );
    let _ = writeln!(
        s,
        "    δ1 is computed from the replica's OWN δ2, not from averaged values: δ belongs to one image."
    );
    let _ = writeln!(
        s,
        "  check, on these images: |all-reduced gradient − one device's gradient on all {}| ≤ {:.1e} \
         (largest gradient {:.3e}; only the order of the float additions differs)",
        e.global_batch, e.max_difference, e.max_gradient
    );
    let _ = writeln!(
        s,
        "  then every replica applies the same update w −= lr·g to the same weights, so the copies stay \
         identical with no weights sent (gpu-train checks this each epoch with a hash of every weight)."
    );
    s += "  bytes one replica sends per step in a ring all-reduce, 2(N−1)/N × the gradient:";
    for (n, b) in &e.ring_bytes {
        let _ = write!(s, "  N={n}: {}", thousands(*b as usize));
    }
    s += "\n";
    // The chapter's claims are about its own network, 784-128-10, whatever weights are loaded.
    // Its mini-batch is 64 images, the trainer's default batch.
    let neurons = crate::model::HIDDEN + CLASSES;
    let batch = crate::config::DEFAULT_BATCH;
    let macs = LAYERS.iter().map(|l| l.weights()).sum::<usize>() * batch;
    let _ = writeln!(s, "Where the chapter's text differs:");
    let _ = writeln!(
        s,
        "  \"768 neurons (64 x 138)\": {batch} × {neurons} = {} neuron outputs per mini-batch; the network has {neurons} neurons.",
        thousands(batch * neurons)
    );
    let _ = writeln!(
        s,
        "  \"6,422,528 weight parameters (128x64x784) + (10x64x128)\": the two terms add to {} (6,422,528 is the first \
         alone), and they count multiply-adds of one forward pass; the weights are shared by all {batch} images: {}.",
        thousands(macs),
        thousands(Summary::of(&LAYERS).weights)
    );
    let _ = writeln!(
        s,
        "  \"8,832 bias weight parameters\": {batch} × {neurons} = {} bias additions; the network has {neurons} biases.",
        thousands(batch * neurons)
    );
    let _ = writeln!(
        s,
        "  \"averaged gradients\" flowing back into the preceding layer's δ, and updated weights \"also synchronized\":"
    );
    let _ = writeln!(
        s,
        "    in data parallelism only the weight gradients are summed, once, after the backward pass (layer by layer, \
         so the output layer's sum can start early: --overlap); δ stays local and no weights travel."
    );
    s
}

