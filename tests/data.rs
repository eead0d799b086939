//! The IDX loader: real files load with the counts in their headers; every kind of bad file
//! gives an error naming the file and the fault; no bytes at all make it panic.

mod common;
use common::gzip;
use gpu_train::data::{self, idx, Dataset, PIXELS};
use gpu_train::error::Error;
use rand::{Rng, SeedableRng};

fn fault(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn bundled_sample_loads_with_header_counts() {
    let split = data::load_dir(&data::bundled_dir()).unwrap();
    assert_eq!(split.train.len(), 10_000, "the sample's header count");
    assert_eq!(split.test.len(), 10_000);
    assert_eq!(split.train.images.len(), 10_000 * PIXELS);
    // The README of the sample: its first ten labels are 5 0 4 1 9 2 1 3 1 4.
    assert_eq!(&split.train.labels[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    // Every class is present in both halves.
    for set in [&split.train, &split.test] {
        let mut seen = [0usize; 10];
        set.labels.iter().for_each(|&l| seen[l as usize] += 1);
        assert!(seen.iter().all(|&c| c > 500), "{seen:?}");
    }
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let images = idx::encode_images(2, 28, 28, &[7u8; 2 * PIXELS]);
    let dir = tempfile::tempdir().unwrap();
    // A gzip stream under the raw name, and a raw file under a .gz name: both must load.
    let raw_named = dir.path().join("imgs");
    std::fs::write(&raw_named, gzip(&images)).unwrap();
    let gz_named = dir.path().join("imgs.gz");
    std::fs::write(&gz_named, &images).unwrap();
    for p in [&raw_named, &gz_named] {
        let parsed = idx::parse_images(&idx::read_file(p).unwrap(), "x").unwrap();
        assert_eq!((parsed.count, parsed.rows, parsed.cols), (2, 28, 28));
        assert!(parsed.pixels.iter().all(|&p| p == 7));
    }
}

#[test]
fn pixels_scale_to_unit_range_and_labels_one_hot() {
    let mut images = vec![0u8; 2 * PIXELS];
    images[0] = 255;
    images[PIXELS + 1] = 51;
    let set = Dataset::new(images, vec![3, 9]).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    set.gather_batch(&[1, 0], &mut x, &mut y);
    assert_eq!(x[1], 51.0 / 255.0);
    assert_eq!(x[PIXELS], 1.0);
    assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert_eq!(&y[..10], &[0., 0., 0., 0., 0., 0., 0., 0., 0., 1.]);
    assert_eq!(y[10 + 3], 1.0);
    assert_eq!(y.iter().sum::<f32>(), 2.0);
}

#[test]
fn each_fault_names_the_file_and_the_problem() {
    let good = idx::encode_images(3, 28, 28, &vec![1u8; 3 * PIXELS]);
    let name = "train-images-idx3-ubyte.gz";
    let e = fault(idx::parse_images(&good[..good.len() - 1], name));
    assert!(
        e.starts_with(name)
            && e.contains("header says 3 images")
            && e.contains(&format!("{}", 3 * PIXELS - 1)),
        "{e}"
    );
    let e = fault(idx::parse_images(&good[..10], name));
    assert!(e.contains("too short"), "{e}");
    let mut wrong_magic = good.clone();
    wrong_magic[3] = 0x01;
    let e = fault(idx::parse_images(&wrong_magic, name));
    assert!(e.contains("magic number is 0x00000801"), "{e}");

    let labels = idx::encode_labels(&[1, 2, 3]);
    let lname = "train-labels-idx1-ubyte.gz";
    let e = fault(idx::parse_labels(&labels[..labels.len() - 1], lname));
    assert_eq!(
        e,
        format!("{lname}: header says 3 labels but the file holds 2")
    );
    let e = fault(idx::parse_labels(&idx::encode_labels(&[1, 10, 3]), lname));
    assert!(e.contains("label 1 is 10"), "{e}");

    // A truncated gzip stream.
    let gz = gzip(&good);
    let e = fault(idx::decompress_if_gzip(&gz[..gz.len() / 2], name));
    assert!(e.starts_with(name) && e.contains("gzip"), "{e}");
}

#[test]
fn counts_that_disagree_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.path().join(name), bytes).unwrap();
    write(
        "train-images-idx3-ubyte",
        idx::encode_images(3, 28, 28, &vec![0u8; 3 * PIXELS]),
    );
    write("train-labels-idx1-ubyte", idx::encode_labels(&[1, 2]));
    write(
        "t10k-images-idx3-ubyte",
        idx::encode_images(1, 28, 28, &vec![0u8; PIXELS]),
    );
    let e = fault(data::load_dir(dir.path()));
    assert!(
        e.contains("says 2 labels but train-images-idx3-ubyte's says 3 images"),
        "{e}"
    );
    write("train-labels-idx1-ubyte", idx::encode_labels(&[1, 2, 3]));
    let e = fault(data::load_dir(dir.path()));
    assert!(e.contains("no t10k-labels-idx1-ubyte"), "{e}");
    write("t10k-labels-idx1-ubyte", idx::encode_labels(&[4]));
    let split = data::load_dir(dir.path()).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (3, 1));
    let e = fault(data::load_dir(&dir.path().join("nope")));
    assert!(e.contains("does not exist"), "{e}");
    // Images of another size.
    write(
        "t10k-images-idx3-ubyte",
        idx::encode_images(1, 32, 32, &vec![0u8; 1024]),
    );
    let e = fault(data::load_dir(dir.path()));
    assert!(e.contains("32x32"), "{e}");
}

/// Fuzz-style: random bytes, random headers with random payloads, and every truncation of a
/// real file, raw and gzip'd: the parser returns Ok or Err, never panics.
#[test]
fn random_and_truncated_bytes_never_panic() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let real = idx::encode_images(2, 28, 28, &vec![9u8; 2 * PIXELS]);
    let real_labels = idx::encode_labels(&[0, 9]);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for _ in 0..2000 {
        let len = rng.random_range(0..64);
        let mut v: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) && v.len() >= 4 {
            // Give half of them a valid magic so the parser goes past the first check.
            let magic = if rng.random_bool(0.5) {
                idx::IMAGES_MAGIC
            } else {
                idx::LABELS_MAGIC
            };
            v[..4].copy_from_slice(&magic.to_be_bytes());
        }
        inputs.push(v);
    }
    for cut in 0..real.len() {
        inputs.push(real[..cut].to_vec());
    }
    for cut in 0..real_labels.len() {
        inputs.push(real_labels[..cut].to_vec());
    }
    let gz = gzip(&real);
    for cut in 0..gz.len() {
        inputs.push(gz[..cut].to_vec());
    }
    let mut flipped = gz.clone();
    for i in 0..flipped.len() {
        flipped[i] ^= 0x55;
        inputs.push(flipped.clone());
        flipped[i] ^= 0x55;
    }
    let mut accepted = 0;
    for bytes in &inputs {
        let result = std::panic::catch_unwind(|| {
            let decoded = idx::decompress_if_gzip(bytes, "fuzz");
            if let Ok(d) = decoded {
                let a = idx::parse_images(&d, "fuzz").is_ok();
                let b = idx::parse_labels(&d, "fuzz").is_ok();
                a || b
            } else {
                false
            }
        });
        accepted += result.expect("the parser panicked") as usize;
    }
    // The complete files are among the inputs and must be accepted; almost nothing else is.
    assert!(accepted >= 2, "accepted {accepted}");
}

#[test]
fn epoch_orders_are_seeded_permutations() {
    let a = data::epoch_order(1000, 42, 1);
    assert_eq!(a, data::epoch_order(1000, 42, 1));
    assert_ne!(a, data::epoch_order(1000, 42, 2));
    assert_ne!(a, data::epoch_order(1000, 43, 1));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
}
