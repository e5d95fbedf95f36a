//! Labelled images kept as `u8` (MNIST is 47 MB as bytes, 188 MB as f32) and normalised
//! to `[0, 1]` one batch at a time; the stratified train/validation split.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use smartmixed_core::{DataConfig, InputManifest};

use super::idx::read_idx;
use crate::{Error, Result};

/// Images (flattened, any shape) and their class labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    features: usize,
    /// The shape of one image (`[28, 28]` for MNIST); its product is `features`.
    shape: Vec<usize>,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

/// One batch, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[len, features]`, pixels / 255.
    pub inputs: Vec<f32>,
    /// `[len, classes]`, one-hot.
    pub targets: Vec<f32>,
    pub labels: Vec<u8>,
}

/// The three sets of a run.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub validation: Dataset,
    pub test: Dataset,
    /// Number of classes; every label is below it.
    pub classes: usize,
}

impl Dataset {
    /// Builds a dataset from parts; `pixels.len()` must be `labels.len() * features`.
    pub fn new(features: usize, pixels: Vec<u8>, labels: Vec<u8>) -> Self {
        assert_eq!(
            pixels.len(),
            labels.len() * features,
            "pixels do not match labels"
        );
        Self {
            features,
            shape: vec![features],
            pixels,
            labels,
        }
    }

    /// The same items, each of `shape` (whose product must be the feature count).
    pub fn with_shape(mut self, shape: Vec<usize>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.features,
            "shape does not match"
        );
        self.shape = shape;
        self
    }

    /// The shape of one item.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Reads an image IDX file and a label IDX file and checks that they belong together
    /// and that every label is below `classes`.
    pub fn from_idx(images: &Path, labels: &Path, classes: usize) -> Result<Self> {
        let img = read_idx(images)?;
        let lab = read_idx(labels)?;
        if img.dims.len() < 2 {
            return Err(Error::Data {
                path: images.to_path_buf(),
                offset: 3,
                message: format!(
                    "{} dimension(s), expected at least 2 (count, pixels...)",
                    img.dims.len()
                ),
            });
        }
        if lab.dims.len() != 1 {
            return Err(Error::Data {
                path: labels.to_path_buf(),
                offset: 3,
                message: format!("{} dimensions, expected 1 for labels", lab.dims.len()),
            });
        }
        if img.count() == 0 {
            return Err(Error::Data {
                path: images.to_path_buf(),
                offset: 4,
                message: "0 images, expected at least 1".into(),
            });
        }
        if img.count() != lab.count() {
            return Err(Error::Mismatch {
                path: labels.to_path_buf(),
                message: format!(
                    "{} labels for {} images in {}",
                    lab.count(),
                    img.count(),
                    images.display()
                ),
            });
        }
        if let Some(i) = lab.data.iter().position(|&l| l as usize >= classes) {
            return Err(Error::Data {
                path: labels.to_path_buf(),
                offset: 8 + i as u64,
                message: format!(
                    "label {} out of range, expected 0..{}",
                    lab.data[i], classes
                ),
            });
        }
        let features = img.item_len();
        if features == 0 {
            return Err(Error::Data {
                path: images.to_path_buf(),
                offset: 8,
                message: "images have 0 pixels".into(),
            });
        }
        let shape = img.dims[1..].to_vec();
        Ok(Self::new(features, img.data, lab.data).with_shape(shape))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Pixels per image: the network's input width.
    pub fn features(&self) -> usize {
        self.features
    }
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
    /// The raw bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * self.features..(i + 1) * self.features]
    }

    /// A new dataset of the given items, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut pixels = Vec::with_capacity(indices.len() * self.features);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Self::new(
            self.features,
            pixels,
            indices.iter().map(|&i| self.labels[i]).collect(),
        )
        .with_shape(self.shape.clone())
    }

    /// The items at `indices` as a normalised batch with one-hot targets.
    pub fn batch(&self, indices: &[usize], classes: usize) -> Batch {
        let mut inputs = Vec::with_capacity(indices.len() * self.features);
        let mut targets = vec![0.0; indices.len() * classes];
        let mut labels = Vec::with_capacity(indices.len());
        for (row, &i) in indices.iter().enumerate() {
            inputs.extend(self.image(i).iter().map(|&p| p as f32 / 255.0));
            targets[row * classes + self.labels[i] as usize] = 1.0;
            labels.push(self.labels[i]);
        }
        Batch {
            inputs,
            targets,
            labels,
        }
    }

    /// Splits into (train, validation) with `fraction` of each class in validation,
    /// chosen by a generator seeded with `seed`.
    pub fn stratified_split(&self, fraction: f64, seed: u64, classes: usize) -> (Self, Self) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut by_class = vec![Vec::new(); classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for mut members in by_class {
            members.shuffle(&mut rng);
            let n_val = (members.len() as f64 * fraction).round() as usize;
            val.extend_from_slice(&members[..n_val]);
            train.extend_from_slice(&members[n_val..]);
        }
        train.sort_unstable();
        val.sort_unstable();
        (self.subset(&train), self.subset(&val))
    }
}

/// The first existing file among `dir/stem.gz` and `dir/stem`.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| Error::Mismatch {
            path: dir.to_path_buf(),
            message: format!("missing data file {stem}.gz (or {stem})"),
        })
}

/// Checks that `dir` is a data directory (errors name `data.dir`).
fn check_data_dir(dir: &Path) -> Result<()> {
    if dir.is_file() {
        return Err(Error::Mismatch {
            path: dir.to_path_buf(),
            message: "data.dir is a file, expected a directory holding the IDX files".into(),
        });
    }
    if !dir.is_dir() {
        return Err(Error::Mismatch {
            path: dir.to_path_buf(),
            message: "data directory does not exist (set data.dir or --data-dir)".into(),
        });
    }
    Ok(())
}

impl Dataset {
    /// Only the test files of an MNIST-style directory (`eval` needs nothing else).
    pub fn load_test(dir: &Path, classes: usize) -> Result<Self> {
        check_data_dir(dir)?;
        Self::from_idx(
            &find_file(dir, "t10k-images-idx3-ubyte")?,
            &find_file(dir, "t10k-labels-idx1-ubyte")?,
            classes,
        )
    }
}

impl Splits {
    /// What the network's input is: 8-bit images of the training set's shape, scaled to
    /// `[0, 1]` (the manifest's `input` table).
    pub fn input(&self) -> InputManifest {
        InputManifest::pixels(self.train.shape().to_vec())
    }

    /// The classes' names: IDX labels are class numbers.
    pub fn class_names(&self) -> Vec<String> {
        (0..self.classes).map(|c| c.to_string()).collect()
    }

    /// Loads the MNIST-style directory named by the config and splits it as configured:
    /// stratified train/validation from the training files, the test files as test set.
    pub fn load(cfg: &DataConfig, classes: usize) -> Result<Self> {
        let dir = &cfg.dir;
        check_data_dir(dir)?;
        let mut full = Dataset::from_idx(
            &find_file(dir, "train-images-idx3-ubyte")?,
            &find_file(dir, "train-labels-idx1-ubyte")?,
            classes,
        )?;
        let mut test = Dataset::load_test(dir, classes)?;
        if test.features != full.features {
            return Err(Error::Mismatch {
                path: dir.clone(),
                message: format!(
                    "test images have {} pixels, training images {}",
                    test.features, full.features
                ),
            });
        }
        if let Some(limit) = cfg.train_limit.filter(|&l| l < full.len()) {
            // A seeded random subset, so that small runs still see every class.
            let mut idx: Vec<usize> = (0..full.len()).collect();
            idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
                cfg.split_seed ^ 0x5eed,
            ));
            idx.truncate(limit);
            idx.sort_unstable();
            full = full.subset(&idx);
        }
        if let Some(limit) = cfg.test_limit.filter(|&l| l < test.len()) {
            test = test.subset(&(0..limit).collect::<Vec<_>>());
        }
        let (train, validation) =
            full.stratified_split(cfg.validation_fraction, cfg.split_seed, classes);
        if train.is_empty() || validation.is_empty() {
            let (left, need) = if validation.is_empty() {
                ("no validation image", "a larger")
            } else {
                ("no training image", "a smaller")
            };
            return Err(Error::Mismatch {
                path: dir.clone(),
                message: format!(
                    "data.validation_fraction = {} leaves {left} out of {} training images; expected {need} fraction",
                    cfg.validation_fraction,
                    full.len()
                ),
            });
        }
        Ok(Self {
            train,
            validation,
            test,
            classes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        // 3 classes with 10, 20 and 30 items; each item's pixel records its index.
        let labels: Vec<u8> = (0..60)
            .map(|i| {
                if i < 10 {
                    0
                } else if i < 30 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let ds = Dataset::new(1, (0..60).collect(), labels);
        let (train, val) = ds.stratified_split(0.1, 42, 3);
        let count = |d: &Dataset, c: u8| d.labels().iter().filter(|&&l| l == c).count();
        assert_eq!([count(&val, 0), count(&val, 1), count(&val, 2)], [1, 2, 3]);
        assert_eq!(train.len() + val.len(), 60);
        let mut all: Vec<u8> = train
            .pixels
            .iter()
            .chain(val.pixels.iter())
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..60).collect::<Vec<u8>>());
        let (_, val2) = ds.stratified_split(0.1, 42, 3);
        assert_eq!(val.pixels, val2.pixels);
        let (_, val3) = ds.stratified_split(0.1, 7, 3);
        assert_ne!(val.pixels, val3.pixels);
    }

    #[test]
    fn batch_normalises_and_one_hots() {
        let ds = Dataset::new(2, vec![0, 255, 51, 102], vec![1, 0]);
        let b = ds.batch(&[1, 0], 3);
        assert_eq!(b.inputs, vec![0.2, 0.4, 0.0, 1.0]);
        assert_eq!(b.targets, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(b.labels, vec![0, 1]);
    }
}
