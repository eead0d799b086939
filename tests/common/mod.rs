//! Helpers shared by the tests.
#![allow(dead_code)]

use gpu_train::gpu::context::Gpu;
use rand::{Rng, SeedableRng};

/// Whether this is a CI run: `CI=true`, as `.ci/run` (and GitHub Actions, GitLab CI and most
/// other CI services) set it. There a case that did not run is a failure, not a pass.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Says that `test` did not run its case, and why. Under CI ([`under_ci`]) it panics, so a
/// green CI run means every case ran; elsewhere it prints "SKIPPED test: why" for the test to
/// return on. Call it on the branch that returns early, never after a check that passed.
pub fn skip(test: &str, why: &str) {
    if under_ci() {
        panic!("{test} could not run its case under CI (CI=true): {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The GPU for a test. CI installs lavapipe and sets GPU_TRAIN_REQUIRE_GPU=1 (scripts/test.sh)
/// and CI=true (.ci/run): with either set a missing adapter fails the test; elsewhere the test
/// says why it did nothing.
pub fn gpu(test: &str) -> Option<Gpu> {
    match Gpu::for_tests() {
        Some(g) => Some(g),
        None if std::env::var_os("GPU_TRAIN_REQUIRE_GPU").is_some() => {
            panic!("{test}: no GPU adapter, and GPU_TRAIN_REQUIRE_GPU is set (install mesa-vulkan-drivers)")
        }
        None => {
            skip(
                test,
                "no GPU adapter on this machine (install mesa-vulkan-drivers for lavapipe)",
            );
            None
        }
    }
}

pub fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

pub fn random_f32(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Worst element of `got` against `want` under |got − want| ≤ abs + rel·|want|; panics naming
/// the worst index if any element is outside. Returns the worst relative error.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (mut worst_excess, mut worst_at, mut worst_rel) = (f32::NEG_INFINITY, 0, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        let excess = diff - (abs + rel * w.abs());
        if excess > worst_excess || g.is_nan() != w.is_nan() {
            (worst_excess, worst_at) = (
                if g.is_nan() != w.is_nan() {
                    f32::INFINITY
                } else {
                    excess
                },
                i,
            );
        }
        worst_rel = worst_rel.max(diff / w.abs().max(1e-6));
    }
    assert!(
        worst_excess <= 0.0,
        "{what}: worst at index {worst_at}: got {} want {} (tolerance {abs} + {rel}·|want|)",
        got[worst_at],
        want[worst_at]
    );
    worst_rel
}

/// Runs the gpu-train binary: (exit code, stdout, stderr).
pub fn gpu_train(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bytes` as a gzip stream.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Waits for `child` at most `limit`, killing it past that (a hung or spinning command fails
/// the test).
pub fn wait(mut child: std::process::Child, limit: std::time::Duration) -> std::process::Output {
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
