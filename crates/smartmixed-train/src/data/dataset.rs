//! Labelled items: images kept as `u8` (MNIST is 47 MB as bytes, 188 MB as f32) or table
//! rows as f32, preprocessed one batch at a time by the same [`InputManifest`] the
//! exported model records (pixels / 255; a table's standardisation); the stratified
//! train/validation split.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;

use smartmixed_core::manifest::image_shape;
use smartmixed_core::InputManifest;

use super::folder;
use super::idx::read_idx;
use super::table::{self, read_table};
use crate::{DataConfig, DataFormat, Error, Result};

/// Items (flattened, any shape), their class labels and their preprocessing.
#[derive(Debug, Clone)]
pub struct Dataset {
    features: usize,
    values: Values,
    labels: Vec<u8>,
    /// Shape and preprocessing of one item (`[28, 28]` pixels / 255 for MNIST).
    input: InputManifest,
}

/// The raw values of every item, row-major.
#[derive(Debug, Clone)]
enum Values {
    Pixels(Vec<u8>),
    Table(Vec<f32>),
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
    /// The classes' names (a table's label values; empty: the class numbers).
    pub class_names: Vec<String>,
    /// Table rows left out for an invalid cell (`data.invalid = "drop"`), both files.
    pub dropped_rows: usize,
    /// Table columns that `f32` holds only coarsely for their spread (either file; a
    /// column once): training goes on, the CLI warns.
    pub imprecise_features: Vec<super::ImpreciseColumn>,
}

impl Dataset {
    /// Builds an image dataset from parts; `pixels.len()` must be
    /// `labels.len() * features`.
    pub fn new(features: usize, pixels: Vec<u8>, labels: Vec<u8>) -> Self {
        assert_eq!(
            pixels.len(),
            labels.len() * features,
            "pixels do not match labels"
        );
        Self {
            features,
            values: Values::Pixels(pixels),
            labels,
            input: InputManifest::pixels(vec![features]),
        }
    }

    /// A table dataset: `rows.len()` must be `labels.len() * features`; the input is the
    /// values as they are until [`Splits`] sets the training split's standardisation.
    pub fn from_table(features: usize, rows: Vec<f32>, labels: Vec<u8>) -> Self {
        assert_eq!(
            rows.len(),
            labels.len() * features,
            "rows do not match labels"
        );
        let mut input = InputManifest::pixels(vec![features]);
        input.divisor = 1.0;
        Self {
            features,
            values: Values::Table(rows),
            labels,
            input,
        }
    }

    /// The same items, each of `shape` (whose product must be the feature count).
    pub fn with_shape(mut self, shape: Vec<usize>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.features,
            "shape does not match"
        );
        self.input.shape = shape;
        self
    }

    /// The shape of one item.
    pub fn shape(&self) -> &[usize] {
        &self.input.shape
    }

    /// The shape and preprocessing of one item, as the exported manifest records it.
    pub fn input(&self) -> &InputManifest {
        &self.input
    }

    /// Item `i`'s raw values as f32 (pixels 0-255, or a table row as read).
    pub fn raw(&self, i: usize) -> Vec<f32> {
        let mut row = Vec::with_capacity(self.features);
        self.extend_raw(i, &mut row);
        row
    }

    /// Appends item `i`'s raw values to `out` (a batch of raw rows built without a vector
    /// per row).
    pub fn extend_raw(&self, i: usize, out: &mut Vec<f32>) {
        let range = i * self.features..(i + 1) * self.features;
        match &self.values {
            Values::Pixels(p) => out.extend(p[range].iter().map(|&v| f32::from(v))),
            Values::Table(t) => out.extend_from_slice(&t[range]),
        }
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
        // [N, h, w, 1] (numpy's and TensorFlow's grey images) is recorded as [h, w], so
        // that the model checks image sizes as for any grey image.
        let shape = image_shape(&img.dims[1..]).to_vec();
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
    /// The raw bytes of image `i` (empty for a table).
    pub fn image(&self, i: usize) -> &[u8] {
        match &self.values {
            Values::Pixels(p) => &p[i * self.features..(i + 1) * self.features],
            Values::Table(_) => &[],
        }
    }

    /// The same items with each label `l` replaced by `map[l]` (`eval` renumbers a data
    /// set's classes as a model's); `map` must cover every label.
    pub fn relabelled(mut self, map: &[u8]) -> Self {
        for l in &mut self.labels {
            *l = map[*l as usize];
        }
        self
    }

    /// A new dataset of the given items, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let n = self.features;
        /// Rows `indices` of `values` (rows of `n`), in that order.
        fn rows<T: Copy>(values: &[T], indices: &[usize], n: usize) -> Vec<T> {
            indices
                .iter()
                .flat_map(|&i| &values[i * n..(i + 1) * n])
                .copied()
                .collect()
        }
        let values = match &self.values {
            Values::Pixels(p) => Values::Pixels(rows(p, indices, n)),
            Values::Table(t) => Values::Table(rows(t, indices, n)),
        };
        Self {
            features: n,
            values,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            input: self.input.clone(),
        }
    }

    /// Every table value stays finite after the preprocessing (a huge cell standardised
    /// with a small deviation overflows: training would score its NaN logits); the error
    /// names the feature, the raw value and what it became.
    fn check_preprocessed(&self, set: &str, origin: &Path) -> Result<()> {
        let Values::Table(values) = &self.values else {
            return Ok(());
        };
        let n = self.features.max(1);
        let mut row = vec![0.0f32; n];
        for (item, raw) in values.chunks_exact(n).enumerate() {
            self.input.apply(raw, &mut row);
            if let Some(i) = row.iter().position(|v| !v.is_finite()) {
                let name = self.input.feature_names.get(i).map_or("?", String::as_str);
                return Err(Error::Mismatch {
                    path: origin.to_path_buf(),
                    message: format!(
                        "{set} item {item}, feature `{name}`: the value {:?} becomes {} after standardisation (training mean {:?}, deviation {:?}), expected a finite number",
                        raw[i],
                        row[i],
                        self.input.mean.get(i).copied().unwrap_or(0.0),
                        self.input.std.get(i).copied().unwrap_or(1.0)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The items at `indices` preprocessed as a batch, with one-hot targets.
    pub fn batch(&self, indices: &[usize], classes: usize) -> Batch {
        let mut inputs = Vec::with_capacity(indices.len() * self.features);
        let mut targets = vec![0.0; indices.len() * classes];
        let mut labels = Vec::with_capacity(indices.len());
        let n = self.features;
        for (row, &i) in indices.iter().enumerate() {
            match &self.values {
                Values::Pixels(p) => {
                    inputs.extend(p[i * n..(i + 1) * n].iter().map(|&v| f32::from(v)))
                }
                Values::Table(t) => inputs.extend_from_slice(&t[i * n..(i + 1) * n]),
            }
            targets[row * classes + self.labels[i] as usize] = 1.0;
            labels.push(self.labels[i]);
        }
        self.input.apply_in_place(&mut inputs);
        Batch {
            inputs,
            targets,
            labels,
        }
    }

    /// Splits into (train, validation) with `fraction` of each class in validation,
    /// chosen by a generator seeded with `seed`, but never a class's every member: a class
    /// of one item (or a fraction that rounds up to all of a small class) keeps one item on
    /// the training side, since a class held out whole is never learnt and only counts as
    /// errors where it is measured.
    pub fn stratified_split(&self, fraction: f64, seed: u64, classes: usize) -> (Self, Self) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut by_class = vec![Vec::new(); classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for mut members in by_class {
            members.shuffle(&mut rng);
            let n_val = ((members.len() as f64 * fraction).round() as usize)
                .min(members.len().saturating_sub(1));
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
    /// What the network's input is (the manifest's `input` table): the training set's
    /// shape and preprocessing, which every set shares.
    pub fn input(&self) -> InputManifest {
        self.train.input().clone()
    }

    /// The classes' names, in label order.
    pub fn class_names(&self) -> Vec<String> {
        if self.class_names.is_empty() {
            // IDX labels are class numbers.
            (0..self.classes).map(|c| c.to_string()).collect()
        } else {
            self.class_names.clone()
        }
    }

    /// Loads the data the config names (`data.format`) and splits it as configured.
    pub fn load(cfg: &DataConfig, classes: usize) -> Result<Self> {
        match cfg.format() {
            DataFormat::Idx => Self::load_idx(cfg, classes),
            DataFormat::Csv => Self::load_csv(cfg),
            DataFormat::ImageFolder => Self::load_folder(cfg),
        }
    }

    /// An image folder: classes from `train`'s subfolders, the same classes under `test`.
    fn load_folder(cfg: &DataConfig) -> Result<Self> {
        let dir = &cfg.dir;
        let names = folder::class_names(dir)?;
        folder::check_test_classes(dir, &names)?;
        let channels = cfg.channels;
        let (full, size) = folder::read_split(&dir.join("train"), &names, None, channels)?;
        let (test, _) = folder::read_split(&dir.join("test"), &names, Some(size), channels)?;
        Self::split(cfg, dir, full, test, names.len(), names)
    }

    /// The MNIST-style directory: stratified train/validation from the training files, the
    /// test files as test set.
    fn load_idx(cfg: &DataConfig, classes: usize) -> Result<Self> {
        let dir = &cfg.dir;
        check_data_dir(dir)?;
        let full = Dataset::from_idx(
            &find_file(dir, "train-images-idx3-ubyte")?,
            &find_file(dir, "train-labels-idx1-ubyte")?,
            classes,
        )?;
        let test = Dataset::load_test(dir, classes)?;
        if test.shape() != full.shape() {
            return Err(Error::Mismatch {
                path: dir.clone(),
                message: format!(
                    "test images of shape {:?}, training images of shape {:?}; expected the same shape",
                    test.shape(),
                    full.shape()
                ),
            });
        }
        Self::split(cfg, dir, full, test, classes, Vec::new())
    }

    /// A CSV table: classes from its label column, a held-out stratified test split (or
    /// `data.test_file`), then train/validation; standardised with the training split's
    /// statistics.
    fn load_csv(cfg: &DataConfig) -> Result<Self> {
        let path = cfg.file.clone().unwrap_or_default();
        let label = cfg.label.as_deref().unwrap_or_default();
        let table = read_table(&path, label, cfg.invalid)?;
        let names = table::class_names(&table.labels);
        let mismatch = |message: String| Error::Mismatch {
            path: path.clone(),
            message,
        };
        if !(2..=256).contains(&names.len()) {
            return Err(mismatch(format!(
                "column `{label}` holds {} classes, expected 2 to 256",
                names.len()
            )));
        }
        let index: HashMap<&str, u8> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u8))
            .collect();
        // Moves the table's values into the dataset (no copy); each distinct label text
        // maps to its class once.
        let dataset = |t: table::Table, origin: &Path| -> Result<Dataset> {
            let class_of = t
                .labels
                .iter()
                .enumerate()
                .map(|(k, l)| {
                    index.get(l.as_str()).copied().ok_or_else(|| {
                        let row = t.row_labels.iter().position(|&r| r as usize == k);
                        Error::Mismatch {
                            path: origin.to_path_buf(),
                            message: format!(
                                "data row {}: label `{l}` is not a class of {} ({})",
                                row.map_or(0, |r| r + 1),
                                path.display(),
                                names.join(", ")
                            ),
                        }
                    })
                })
                .collect::<Result<Vec<u8>>>()?;
            let labels = t.row_labels.iter().map(|&r| class_of[r as usize]).collect();
            Ok(Dataset::from_table(t.features.len(), t.values, labels))
        };
        let features = table.features.clone();
        let mut dropped_rows = table.dropped;
        let mut imprecise = table.imprecise.clone();
        let full = dataset(table, &path)?;
        let (pool, test) = match &cfg.test_file {
            Some(test_path) => {
                let test = read_table(test_path, label, cfg.invalid)?;
                if test.features != features {
                    return Err(Error::Mismatch {
                        path: test_path.clone(),
                        message: format!(
                            "feature columns {:?}, expected those of {}: {:?}",
                            test.features,
                            path.display(),
                            features
                        ),
                    });
                }
                dropped_rows += test.dropped;
                for c in &test.imprecise {
                    if imprecise.iter().all(|i| i.column != c.column) {
                        imprecise.push(c.clone());
                    }
                }
                (full, dataset(test, test_path)?)
            }
            None => {
                let (pool, test) =
                    full.stratified_split(cfg.test_fraction, cfg.test_seed, names.len());
                let rows = full.len();
                drop(full); // the values are held twice at most
                if pool.is_empty() || test.is_empty() {
                    return Err(mismatch(format!(
                        "{} data rows: data.test_fraction = {} leaves no {} row; expected more rows",
                        rows,
                        cfg.test_fraction,
                        if test.is_empty() { "test" } else { "training" }
                    )));
                }
                (pool, test)
            }
        };
        let mut splits = Self::split(cfg, &path, pool, test, names.len(), names)?;
        splits.dropped_rows = dropped_rows;
        splits.imprecise_features = imprecise;
        splits.standardise(cfg.standardize, features);
        let input = splits.train.input();
        if let Some(i) = table::unscalable(&input.mean, &input.std, input.divisor) {
            return Err(Error::Mismatch {
                path: path.clone(),
                message: table::unscalable_message(&input.feature_names, i, input.std[i]),
            });
        }
        let test_origin = cfg.test_file.as_ref().unwrap_or(&path);
        for (set, name, origin) in [
            (&splits.train, "training", &path),
            (&splits.validation, "validation", &path),
            (&splits.test, "test", test_origin),
        ] {
            set.check_preprocessed(name, origin)?;
        }
        Ok(splits)
    }

    /// Every set's preprocessing set to `input` (in-memory data, `arrays.rs`).
    pub(super) fn set_input(&mut self, input: InputManifest) {
        for set in [&mut self.train, &mut self.validation, &mut self.test] {
            set.input = input.clone();
        }
    }

    /// Every set's preprocessing: the training split's per-feature mean and standard
    /// deviation (if `standardize`), and the feature names.
    fn standardise(&mut self, standardize: bool, names: Vec<String>) {
        let mut input = self.train.input().clone();
        if standardize {
            if let Values::Table(values) = &self.train.values {
                (input.mean, input.std) = table::standardisation(values, self.train.features);
            }
        }
        input.feature_names = names;
        for set in [&mut self.train, &mut self.validation, &mut self.test] {
            set.input = input.clone();
        }
    }

    /// The limits, then the stratified train/validation split of `full`; `origin` names
    /// the data in errors.
    pub(super) fn split(
        cfg: &DataConfig,
        origin: &Path,
        mut full: Dataset,
        mut test: Dataset,
        classes: usize,
        class_names: Vec<String>,
    ) -> Result<Self> {
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
            let keep: Vec<usize> = if cfg.format() == DataFormat::Idx {
                // MNIST's test files follow no class order: the first items, as the
                // published subsets take them.
                (0..limit).collect()
            } else {
                // Image folders list one class after another and tables are often sorted
                // by label, so their first items would test a class or two: a seeded
                // random subset instead.
                let mut idx: Vec<usize> = (0..test.len()).collect();
                idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
                    cfg.split_seed ^ 0x7e57,
                ));
                idx.truncate(limit);
                idx.sort_unstable();
                idx
            };
            test = test.subset(&keep);
        }
        let (train, validation) =
            full.stratified_split(cfg.validation_fraction, cfg.split_seed, classes);
        let items = full.len();
        drop(full); // the values are held twice at most
        if train.is_empty() || validation.is_empty() {
            let (left, need) = if validation.is_empty() {
                ("no validation item", "a larger")
            } else {
                ("no training item", "a smaller")
            };
            return Err(Error::Mismatch {
                path: origin.to_path_buf(),
                message: format!(
                    "data.validation_fraction = {} leaves {left} out of {} training items; expected {need} fraction",
                    cfg.validation_fraction,
                    items
                ),
            });
        }
        Ok(Self {
            train,
            validation,
            test,
            classes,
            class_names,
            dropped_rows: 0,
            imprecise_features: Vec::new(),
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
        let items = |d: &Dataset| (0..d.len()).map(|i| d.image(i)[0]).collect::<Vec<u8>>();
        let mut all = [items(&train), items(&val)].concat();
        all.sort_unstable();
        assert_eq!(all, (0..60).collect::<Vec<u8>>());
        let (_, val2) = ds.stratified_split(0.1, 42, 3);
        assert_eq!(items(&val), items(&val2));
        let (_, val3) = ds.stratified_split(0.1, 7, 3);
        assert_ne!(items(&val), items(&val3));
    }

    #[test]
    fn a_test_limit_takes_every_class_of_a_class_ordered_folder_or_table() {
        // Test items one class after another, as an image folder lists them.
        let labels: Vec<u8> = (0..90).map(|i| (i / 30) as u8).collect();
        let test = Dataset::new(1, (0..90).collect(), labels.clone());
        let full = Dataset::new(1, (0..90).collect(), labels);
        let classes_in = |s: &Splits| {
            let mut c: Vec<u8> = s.test.labels().to_vec();
            c.sort_unstable();
            c.dedup();
            c
        };
        let mut cfg = DataConfig {
            format: Some(DataFormat::ImageFolder),
            test_limit: Some(12),
            ..DataConfig::default()
        };
        let names = vec!["a".into(), "b".into(), "c".into()];
        let limited = |cfg: &DataConfig| {
            Splits::split(
                cfg,
                Path::new("d"),
                full.clone(),
                test.clone(),
                3,
                names.clone(),
            )
            .unwrap()
        };
        let s = limited(&cfg);
        assert_eq!((s.test.len(), classes_in(&s)), (12, vec![0, 1, 2]));
        assert_eq!(s.test.labels(), limited(&cfg).test.labels(), "seeded");
        cfg.format = Some(DataFormat::Csv);
        assert_eq!(classes_in(&limited(&cfg)), vec![0, 1, 2]);
        // IDX keeps the first items (MNIST's published subsets).
        cfg.format = Some(DataFormat::Idx);
        let s = limited(&cfg);
        assert_eq!(s.test.labels(), &[0u8; 12][..]);
    }

    #[test]
    fn a_small_class_is_never_held_out_whole() {
        // Class 1 has one item, class 2 two: fractions 0.5 and 0.9 round to all of them.
        let labels = vec![0, 0, 0, 0, 0, 0, 1, 2, 2, 0];
        let ds = Dataset::new(1, (0..10).collect(), labels);
        for fraction in [0.5, 0.9] {
            let (train, val) = ds.stratified_split(fraction, 3, 3);
            let count = |d: &Dataset, c: u8| d.labels().iter().filter(|&&l| l == c).count();
            assert_eq!((count(&train, 1), count(&val, 1)), (1, 0), "{fraction}");
            assert_eq!(count(&train, 2), 1, "{fraction}");
            assert_eq!(count(&val, 2), 1, "{fraction}");
            assert_eq!(train.len() + val.len(), 10);
        }
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
