//! `gpu-train explain`: the chapters' worked examples, computed rather than quoted.
//!
//! * Chapter 2: the two-neuron network, one forward pass, the backward pass and the second
//!   forward pass with every weight updated.
//! * Chapter 3: the forward pass of one real MNIST image through the 784-128-10 network, the
//!   SoftMax table, the cross-entropy loss, the output gradient, and one hidden neuron's
//!   gradient and weight adjustment.
//! * The model summary (weights, biases, memory), derived from the layer shapes.
//! * The data-parallel step: what a replica sends, from the shapes and a real step.

pub mod chapter2;
pub mod chapter3;
pub mod data_parallel;
