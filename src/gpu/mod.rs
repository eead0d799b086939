//! The GPU side, in the order a step meets it: finding an adapter ([`context`]); the matmul
//! family ([`variants`] describes the generated members, [`generate`] writes their WGSL, [`matmul`] lists every
//! variant) and the start-up search that picks one per product ([`autotune`]); the texture
//! mirrors some members read ([`mirror`]); the pipelines ([`kernels`]) and one kernel launch
//! ready to record ([`dispatch`]); the buffers in VRAM ([`buffers`]); the step as a list of
//! dispatches ([`plan`]); the trainer that runs it ([`engine`]) and its profile ([`profile`]).
//! What the kernels and the Rust side agree on (the `Params` structs, the WGSL constants, the
//! step's products) is the shader ABI, [`crate::abi`], which the CPU twins read too.

pub mod autotune;
pub mod buffers;
pub mod context;
pub mod dispatch;
pub mod engine;
pub mod generate;
pub mod kernels;
pub mod matmul;
pub mod mirror;
pub mod plan;
pub mod profile;
pub mod variants;
