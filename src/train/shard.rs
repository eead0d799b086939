//! One replica's part of an epoch: its examples, copied into its own buffer in the order it
//! will train on them, and where each step's batch starts.

use crate::data::{Dataset, PIXELS};

pub struct Shard {
    pub data: Dataset,
    /// Shard-local indices 0, 1, 2, ... (a batch is a slice of them).
    indices: Vec<u32>,
    /// Step s trains on indices[starts[s]..starts[s + 1]].
    starts: Vec<usize>,
}

impl Shard {
    /// Deals replica `r`'s part (of `world`) of every global batch of `order` into its own
    /// shard.
    pub fn deal(train: &Dataset, order: &[u32], global: usize, world: usize, r: usize) -> Shard {
        let mut picked: Vec<u32> = Vec::with_capacity(order.len() / world + global);
        let mut starts = vec![0];
        for batch in order.chunks(global) {
            picked.extend_from_slice(&batch[crate::parallel::all_reduce::part(batch.len(), world, r)]);
            starts.push(picked.len());
        }
        let mut images = Vec::with_capacity(picked.len() * PIXELS);
        for &i in &picked {
            images.extend_from_slice(train.image(i as usize));
        }
        let labels = picked.iter().map(|&i| train.labels[i as usize]).collect();
        Shard {
            data: Dataset::of(images, labels),
            indices: (0..picked.len() as u32).collect(),
            starts,
        }
    }

    /// Step `step`'s batch: indices into [`Shard::data`].
    pub fn batch(&self, step: usize) -> &[u32] {
        &self.indices[self.starts[step]..self.starts[step + 1]]
    }
}
