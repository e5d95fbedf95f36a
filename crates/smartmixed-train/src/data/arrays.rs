//! Training data held in memory (an embedder's arrays, e.g. the Python package's numpy
//! arrays) instead of files: checked like a file's contents, then split and preprocessed
//! as a CSV table is, so the exported manifest describes it the same way.

use std::path::PathBuf;

use super::dataset::{Dataset, Splits};
use super::table;
use crate::{DataConfig, Error, Result};

/// One set of items: `values` row-major (`labels.len()` items of the input's shape), one
/// class index per item.
#[derive(Debug, Clone, Default)]
pub struct Arrays {
    pub values: Vec<f32>,
    pub labels: Vec<u8>,
}

/// Everything a run needs to know about in-memory data.
#[derive(Debug, Clone)]
pub struct ArrayData {
    /// The shape of one item (`[features]` for a table, `[h, w]` for grey images).
    pub shape: Vec<usize>,
    /// Class names in label order; their count is the number of classes (2 to 256).
    pub class_names: Vec<String>,
    /// One name per feature (a table's columns; empty for images).
    pub feature_names: Vec<String>,
    /// Raw values are divided by this before standardising (1 for tables, 255 for 8-bit
    /// pixels).
    pub divisor: f32,
    /// Standardise every feature with the training split's mean and standard deviation.
    pub standardize: bool,
    pub train: Arrays,
    /// `None`: a stratified `data.validation_fraction` of `train`, drawn with
    /// `data.split_seed`, as for files.
    pub validation: Option<Arrays>,
    /// `None`: the validation set doubles as the test set (no rows are held out only to
    /// report a test figure).
    pub test: Option<Arrays>,
}

/// The name errors give a set of arrays.
fn origin(set: &str) -> PathBuf {
    PathBuf::from(format!("{set} arrays"))
}

impl ArrayData {
    /// The width of one item, without overflow.
    fn features(&self) -> Result<usize> {
        let width = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&w| w > 0 && !self.shape.is_empty());
        width.ok_or_else(|| Error::Mismatch {
            path: origin("input"),
            message: format!("shape {:?}, expected positive sizes", self.shape),
        })
    }

    /// A set's values and labels agree with the shape, every value is finite and every
    /// label is a class.
    fn check(&self, set: &str, arrays: &Arrays, features: usize) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Mismatch {
                path: origin(set),
                message,
            })
        };
        if arrays.labels.is_empty() {
            return fail("0 items, expected at least 1".into());
        }
        if arrays.labels.len().checked_mul(features) != Some(arrays.values.len()) {
            return fail(format!(
                "{} values for {} labels, expected {} values per item",
                arrays.values.len(),
                arrays.labels.len(),
                features
            ));
        }
        if let Some(i) = arrays.values.iter().position(|v| !v.is_finite()) {
            return fail(format!(
                "item {}, value {} is {}, expected a finite number",
                i / features,
                i % features,
                arrays.values[i]
            ));
        }
        let classes = self.class_names.len();
        if let Some(i) = arrays.labels.iter().position(|&l| l as usize >= classes) {
            return fail(format!(
                "item {i}: label {} out of range, expected 0..{classes}",
                arrays.labels[i]
            ));
        }
        Ok(())
    }
}

impl Splits {
    /// In-memory data as a run's splits: sets checked, validation drawn from `train` when
    /// not given (`cfg.validation_fraction`, `cfg.split_seed`), standardised with the training split's
    /// statistics when asked. The limits apply only to a drawn validation split.
    pub fn from_arrays(data: ArrayData, cfg: &DataConfig) -> Result<Self> {
        let features = data.features()?;
        if !(data.divisor.is_normal() && data.divisor > 0.0) {
            return Err(Error::Mismatch {
                path: origin("input"),
                message: format!("divisor {}, expected a positive number", data.divisor),
            });
        }
        let classes = data.class_names.len();
        if !(2..=256).contains(&classes) {
            return Err(Error::Mismatch {
                path: origin("label"),
                message: format!("{classes} classes, expected 2 to 256"),
            });
        }
        if !data.feature_names.is_empty() && data.feature_names.len() != features {
            return Err(Error::Mismatch {
                path: origin("input"),
                message: format!(
                    "{} feature names for {features} features",
                    data.feature_names.len()
                ),
            });
        }
        let sets = [
            ("training", Some(&data.train)),
            ("validation", data.validation.as_ref()),
            ("test", data.test.as_ref()),
        ];
        for (set, arrays) in sets {
            if let Some(arrays) = arrays {
                data.check(set, arrays, features)?;
            }
        }
        let as_dataset = |a: Arrays| {
            let mut set = Dataset::from_table(features, a.values, a.labels);
            set = set.with_shape(data.shape.clone());
            set
        };
        let ArrayData {
            train,
            validation,
            test,
            ..
        } = data.clone();
        let mut splits = match validation {
            Some(validation) => {
                let test = test
                    .map(as_dataset)
                    .unwrap_or_else(|| as_dataset(validation.clone()));
                Splits {
                    train: as_dataset(train),
                    validation: as_dataset(validation),
                    test,
                    classes,
                    class_names: data.class_names.clone(),
                    dropped_rows: 0,
                    imprecise_features: Vec::new(),
                }
            }
            None => {
                let full = as_dataset(train);
                let test = match test {
                    Some(t) => as_dataset(t),
                    None => full.subset(&[]),
                };
                // A test_limit of arrays takes a seeded subset, as of a table's rows (the
                // format is not the filesystem's guess).
                let cfg = DataConfig {
                    format: Some(crate::DataFormat::Csv),
                    ..cfg.clone()
                };
                let mut s = Splits::split(
                    &cfg,
                    &origin("training"),
                    full,
                    test,
                    classes,
                    data.class_names.clone(),
                )?;
                if data.test.is_none() {
                    s.test = s.validation.clone();
                }
                s
            }
        };
        let mut input = splits.train.input().clone();
        input.divisor = data.divisor;
        if data.standardize {
            let mut rows = Vec::with_capacity(splits.train.len() * features);
            for i in 0..splits.train.len() {
                splits.train.extend_raw(i, &mut rows);
            }
            for v in rows.iter_mut() {
                *v /= data.divisor;
            }
            (input.mean, input.std) = table::standardisation(&rows, features);
            if let Some(i) = table::unscalable(&input.mean, &input.std, input.divisor) {
                return Err(Error::Mismatch {
                    path: origin("training"),
                    message: table::unscalable_message(&data.feature_names, i, input.std[i]),
                });
            }
        }
        input.feature_names = data.feature_names;
        splits.set_input(input);
        Ok(splits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two features; item `i` is `[i, 10 i]`, labels alternate over two classes.
    fn data(n: usize) -> ArrayData {
        ArrayData {
            shape: vec![2],
            class_names: vec!["a".into(), "b".into()],
            feature_names: vec!["x".into(), "y".into()],
            divisor: 1.0,
            standardize: true,
            train: Arrays {
                values: (0..n).flat_map(|i| [i as f32, 10.0 * i as f32]).collect(),
                labels: (0..n).map(|i| (i % 2) as u8).collect(),
            },
            validation: None,
            test: None,
        }
    }

    fn message(data: ArrayData) -> String {
        Splits::from_arrays(data, &DataConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn bad_arrays_are_errors_naming_the_set_and_the_item() {
        let mut d = data(20);
        d.train.values.pop();
        assert_eq!(
            message(d),
            "training arrays: 39 values for 20 labels, expected 2 values per item"
        );
        let mut d = data(20);
        d.train.values[7] = f32::NAN;
        assert_eq!(
            message(d),
            "training arrays: item 3, value 1 is NaN, expected a finite number"
        );
        let mut d = data(20);
        d.validation = Some(Arrays {
            values: vec![0.0, 0.0],
            labels: vec![2],
        });
        assert_eq!(
            message(d),
            "validation arrays: item 0: label 2 out of range, expected 0..2"
        );
        let mut d = data(20);
        d.class_names.pop();
        assert_eq!(message(d), "label arrays: 1 classes, expected 2 to 256");
        let mut d = data(20);
        d.divisor = 0.0;
        assert_eq!(
            message(d),
            "input arrays: divisor 0, expected a positive number"
        );
    }

    #[test]
    fn splits_are_stratified_and_standardised_with_the_training_statistics() {
        let s = Splits::from_arrays(data(40), &DataConfig::default()).unwrap();
        assert_eq!(s.train.len() + s.validation.len(), 40);
        assert_eq!(s.validation.len(), 4); // 10% of each class of 20
        assert_eq!(s.test.labels(), s.validation.labels());
        // The oracle: the training items' own mean and population standard deviation.
        let xs: Vec<f64> = (0..s.train.len())
            .map(|i| s.train.raw(i)[0] as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        let input = s.train.input();
        assert!((input.mean[0] as f64 - mean).abs() < 1e-4);
        assert!((input.std[0] as f64 - sd).abs() < 1e-4);
        assert!((input.mean[1] as f64 - 10.0 * mean).abs() < 1e-3);
        assert_eq!(input.feature_names, ["x", "y"]);
        assert_eq!(s.validation.input(), input);
        let b = s.train.batch(&[0], 2);
        assert!((b.inputs[0] as f64 - (xs[0] - mean) / sd).abs() < 1e-5);
    }

    #[test]
    fn a_given_validation_set_is_used_as_it_is() {
        let mut d = data(10);
        d.validation = Some(d.train.clone());
        d.standardize = false;
        let s = Splits::from_arrays(d, &DataConfig::default()).unwrap();
        assert_eq!(
            (s.train.len(), s.validation.len(), s.test.len()),
            (10, 10, 10)
        );
        assert!(s.train.input().mean.is_empty());
        assert_eq!(s.train.raw(3), [3.0, 30.0]);
    }
}
