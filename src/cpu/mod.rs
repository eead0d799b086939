//! The CPU side: the fast trainer used as the benchmark baseline ([`engine`]), the f64
//! reference used to check everything ([`reference`]), and one loop-for-loop twin of each
//! WGSL kernel ([`twins`]).

pub mod engine;
pub mod reference;
pub mod twins;
pub mod workers;

/// The cores this process may use (1 if the system will not say).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
