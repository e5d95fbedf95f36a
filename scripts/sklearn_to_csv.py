#!/usr/bin/env python3
"""Writes one of scikit-learn's bundled data sets as a CSV table for `smartmixed-cli train`.

Usage: sklearn_to_csv.py NAME OUT.csv   (NAME: wine, breast_cancer, iris or digits)

The table has a header row, one column per feature (scikit-learn's feature names) and a
`label` column holding the class names. The data ships inside scikit-learn: nothing is
downloaded.
"""
import csv
import sys

from sklearn import datasets

LOADERS = {
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "iris": datasets.load_iris,
    "digits": datasets.load_digits,
}


def main(name, out):
    bunch = LOADERS[name]()
    features = [str(f).replace(" ", "_") for f in getattr(bunch, "feature_names", [])]
    if not features:
        features = [f"pixel_{i}" for i in range(bunch.data.shape[1])]
    names = [str(n) for n in getattr(bunch, "target_names", range(bunch.target.max() + 1))]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(features + ["label"])
        for row, target in zip(bunch.data, bunch.target):
            writer.writerow([repr(float(v)) for v in row] + [names[target]])
    print(f"{out}: {len(bunch.target)} rows, {len(features)} features, {len(names)} classes")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
