//! The data stage of the pipeline: MNIST-format IDX files on disk become a [`Dataset`] in
//! system RAM (pixels kept as u8, 784 bytes an image, exactly as the file stores them), and
//! each epoch is cut into mini-batches in a seeded random order.
//!
//! Pixels become floats in \[0,1\] (`p / 255`) and labels become one-hot rows only when a batch
//! is used, so the set in RAM stays at 47 MB for 60,000 images instead of 188 MB of f32.

pub mod idx;

use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// Pixels per image: 28 x 28.
pub const PIXELS: usize = 28 * 28;
/// Classes (digits 0-9, or the ten Fashion-MNIST garments).
pub const CLASSES: usize = 10;

/// The four standard file names of an MNIST-format data set.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Images and their labels, in RAM, as u8.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len` images of [`PIXELS`] bytes each, row-major.
    pub images: Vec<u8>,
    /// `len` labels, each 0-9.
    pub labels: Vec<u8>,
    /// Which set this is, for an engine that keeps a copy (a resident GPU replica uploads a
    /// set the first time it meets it): every constructor gives a new one, a clone keeps it.
    id: u64,
}

impl PartialEq for Dataset {
    /// Equal contents (whatever their ids).
    fn eq(&self, o: &Dataset) -> bool {
        self.images == o.images && self.labels == o.labels
    }
}

/// The next [`Dataset::id`].
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The training and test halves of a data set, plus where they came from.
#[derive(Debug, Clone)]
pub struct DataSplit {
    pub train: Dataset,
    pub test: Dataset,
    pub dir: PathBuf,
}

impl Dataset {
    /// Builds a data set, checking the shapes agree.
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Result<Self> {
        if images.len() != labels.len() * PIXELS {
            return Err(Error::Config(format!(
                "{} bytes of images do not make {} images of {PIXELS} pixels",
                images.len(),
                labels.len()
            )));
        }
        Ok(Dataset::of(images, labels))
    }

    /// A data set of shapes the caller has checked.
    pub(crate) fn of(images: Vec<u8>, labels: Vec<u8>) -> Self {
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Dataset { images, labels, id }
    }

    /// This set's identity (see the field).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The u8 pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The first `n` examples (or all, if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset::of(
            self.images[..n * PIXELS].to_vec(),
            self.labels[..n].to_vec(),
        )
    }

    /// Gathers the examples at `indices` into `x` as floats in \[0,1\], (batch, 784) row-major,
    /// and their labels into `y` as one-hot rows, (batch, 10). Both are resized to fit.
    pub fn gather_batch(&self, indices: &[u32], x: &mut Vec<f32>, y: &mut Vec<f32>) {
        x.resize(indices.len() * PIXELS, 0.0);
        y.clear();
        y.resize(indices.len() * CLASSES, 0.0);
        for (row, &i) in indices.iter().enumerate() {
            let i = i as usize;
            for (dst, &p) in x[row * PIXELS..(row + 1) * PIXELS]
                .iter_mut()
                .zip(self.image(i))
            {
                *dst = scale_pixel(p);
            }
            y[row * CLASSES + self.labels[i] as usize] = 1.0;
        }
    }

    /// A short fingerprint of the contents (FNV-1a over labels and pixels), so a snapshot
    /// can tell whether it is being resumed on the same data.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in self.labels.iter().chain(self.images.iter()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}

/// Pixel byte to the \[0,1\] float the network sees. The GPU does the same with `unpack4x8unorm`.
pub fn scale_pixel(p: u8) -> f32 {
    p as f32 / 255.0
}

/// The folder of the MNIST sample bundled with the repository (first 10,000 training images,
/// the official 10,000 test images): `data/mnist` under the current directory when run from a
/// checkout (also a copied one), else under the source tree the binary was built from.
pub fn bundled_dir() -> PathBuf {
    let here = Path::new("data").join("mnist");
    if here.join(format!("{TRAIN_IMAGES}.gz")).is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("mnist")
}

/// The data files in `dir` (each of the four names, raw or .gz, where one is there): the inputs
/// no output of a run may overwrite.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
        .iter()
        .flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))])
        .filter(|p| p.exists())
        .collect()
}

/// Finds `name` or `name.gz` in `dir` (not both: which one was meant would be a guess).
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let (raw, gz) = (dir.join(name), dir.join(format!("{name}.gz")));
    if raw.is_file() && gz.is_file() {
        return Err(Error::Config(format!(
            "{}: both {name} and {name}.gz are here; remove one so it is clear which to read",
            dir.display()
        )));
    }
    for candidate in [raw, gz] {
        if candidate.is_file() {
            return Ok(candidate);
        }
        // There, but a FIFO, a device or a folder: say so rather than "missing".
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(Error::Config(format!(
        "{}: no {name} or {name}.gz here; a data directory needs the four MNIST files \
         ({TRAIN_IMAGES}, {TRAIN_LABELS}, {TEST_IMAGES}, {TEST_LABELS}, raw or .gz)",
        dir.display()
    )))
}

/// The most test images a run reads: the test set is read whole (every epoch is scored on all
/// of it), so its size is bounded here rather than by the file's claim. 20× MNIST's 10,000;
/// EMNIST's largest test set (116,323) fits. 157 MB of pixels.
pub const MAX_TEST_IMAGES: u64 = 200_000;

/// Which set a pair of files is, for what a refusal suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    Train,
    Test,
}

/// Loads one images file and one labels file (the first `limit` examples of each, or all)
/// and checks they describe the same examples: their headers are compared, whatever `limit`
/// says, before either payload is read (a 1.9 GB image file whose count the labels do not
/// match costs nothing).
pub fn load_pair(images_path: &Path, labels_path: &Path, limit: Option<usize>) -> Result<Dataset> {
    load_set(images_path, labels_path, limit, Set::Train)
}

/// [`load_pair`] for `set`: a test set read whole is bounded by [`MAX_TEST_IMAGES`].
pub fn load_set(
    images_path: &Path,
    labels_path: &Path,
    limit: Option<usize>,
    set: Set,
) -> Result<Dataset> {
    let images = idx::IdxFile::images(images_path)?;
    let labels = idx::IdxFile::labels(labels_path)?;
    if (images.rows, images.cols) != (28, 28) {
        return Err(Error::bad_data(
            &images.name,
            format!(
                "images are {}x{}, but the model takes 28x28",
                images.rows, images.cols
            ),
        ));
    }
    if images.count != labels.count {
        return Err(Error::bad_data(
            &labels.name,
            format!(
                "its header says {} labels but {}'s says {} images: the two files must describe the same examples",
                labels.count, images.name, images.count
            ),
        ));
    }
    if images.count == 0 {
        return Err(Error::bad_data(&images.name, "holds no images"));
    }
    let keep = limit.map_or(images.count, |l| (l as u64).min(images.count));
    let hint = match set {
        Set::Train => "; pass --limit to read fewer".to_string(),
        Set::Test => String::new(),
    };
    if set == Set::Test && keep > MAX_TEST_IMAGES {
        let why = match limit {
            None => "training scores every epoch on the whole test set",
            Some(_) => "the test images asked for are read with all before them",
        };
        return Err(Error::bad_data(
            &images.name,
            format!(
                "holds {} test images and {keep} would be read ({why}); gpu-train reads at most {MAX_TEST_IMAGES} test images ({} MB): use a smaller test set, or an index below {MAX_TEST_IMAGES}",
                images.count,
                MAX_TEST_IMAGES * PIXELS as u64 / 1_000_000
            ),
        ));
    }
    let pixels = images.read(keep, &hint)?;
    let labels = labels.read(keep, &hint)?;
    Dataset::new(pixels, labels)
}

/// Loads the four files of an MNIST-format data set from `dir`.
pub fn load_dir(dir: &Path) -> Result<DataSplit> {
    load_dir_limited(dir, None)
}

/// [`load_dir`], reading only the first `train_limit` training examples (the test set whole).
pub fn load_dir_limited(dir: &Path, train_limit: Option<usize>) -> Result<DataSplit> {
    check_dir(dir)?;
    let train = load_pair(
        &find(dir, TRAIN_IMAGES)?,
        &find(dir, TRAIN_LABELS)?,
        train_limit,
    )?;
    let test = load_set(
        &find(dir, TEST_IMAGES)?,
        &find(dir, TEST_LABELS)?,
        None,
        Set::Test,
    )?;
    Ok(DataSplit {
        train,
        test,
        dir: dir.to_path_buf(),
    })
}

/// The first `limit` images of `dir`'s test set, and nothing of its training set: what
/// `predict` and `explain` read to show a few images (memory by the work, not by the files).
/// Fewer come back only when the file holds fewer.
pub fn load_test_limited(dir: &Path, limit: usize) -> Result<Dataset> {
    check_dir(dir)?;
    load_set(
        &find(dir, TEST_IMAGES)?,
        &find(dir, TEST_LABELS)?,
        Some(limit),
        Set::Test,
    )
}

/// Refuses a data folder that is missing or is a file.
fn check_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Err(Error::Config(format!(
            "data directory {} does not exist",
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "--data-dir {} is a file, not a folder: pass the folder holding the four MNIST files",
            dir.display()
        )));
    }
    Ok(())
}

/// The order in which epoch `epoch` visits the `n` training examples: a Fisher-Yates shuffle
/// driven by ChaCha8 seeded from (seed, epoch). Deriving it from the epoch number, rather than
/// from an RNG carried between epochs, means a resumed run needs only (seed, epoch, step).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    order.shuffle(&mut rng);
    order
}
