#!/usr/bin/env python3
"""Test accuracy of SmartMixedClassifier against MLPClassifier over many splits and seeds:
the mean, its standard error and the paired difference, so that a margin of a few tenths
of a point can be told from luck (`bench_sklearn.py --seeds` varies the seeds only, on
one split).

Usage: python3 scripts/accuracy_over_splits.py [DATA=digits] [SPLITS=10] [SEEDS=3]
       [--activation NAME] [--pool a,b,...]

DATA is wine, cancer or digits (scikit-learn's bundled tables). Each of SPLITS stratified
75/25 splits (`random_state` 0..SPLITS-1) is fitted with `random_state` 0..SEEDS-1 by both
estimators at their defaults, hidden sizes 64-32; MLPClassifier behind a StandardScaler.
`--activation` fits SmartMixed's fixed-activation baseline instead, `--pool` changes its
pool. Prints one line an estimator and the paired difference (SmartMixed - MLP).
"""
import argparse
import warnings

import numpy as np
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from smartmixed.sklearn import PAPER_POOL, SmartMixedClassifier

LOADERS = {
    "wine": datasets.load_wine,
    "cancer": datasets.load_breast_cancer,
    "digits": datasets.load_digits,
}


def summary(label, values):
    a = np.asarray(values)
    se = a.std(ddof=1) / np.sqrt(len(a))
    return f"{label}: mean {a.mean():.2f}% (se {se:.2f}, n {len(a)}, {a.min():.1f}-{a.max():.1f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default="digits", choices=sorted(LOADERS))
    ap.add_argument("splits", nargs="?", type=int, default=10)
    ap.add_argument("seeds", nargs="?", type=int, default=3)
    ap.add_argument("--activation", default=None)
    ap.add_argument("--pool", default=",".join(PAPER_POOL))
    args = ap.parse_args()
    X, y = LOADERS[args.data](return_X_y=True)
    ours, mlp = [], []
    for split in range(args.splits):
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=0.25, stratify=y, random_state=split
        )
        for seed in range(args.seeds):
            est = SmartMixedClassifier(
                hidden_layer_sizes=(64, 32),
                activation=args.activation,
                pool=tuple(args.pool.split(",")),
                random_state=seed,
            ).fit(X_tr, y_tr)
            ours.append(100 * float((est.predict(X_te) == y_te).mean()))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                ref = make_pipeline(
                    StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), random_state=seed)
                ).fit(X_tr, y_tr)
            mlp.append(100 * float((ref.predict(X_te) == y_te).mean()))
    name = "SmartMixed" if args.activation is None else f"SmartMixed ({args.activation})"
    print(f"{args.data}, {args.splits} splits x {args.seeds} seeds")
    print(summary(name, ours))
    print(summary("MLPClassifier", mlp))
    d = np.asarray(ours) - np.asarray(mlp)
    print(f"paired difference: {d.mean():+.2f} points (se {d.std(ddof=1) / np.sqrt(len(d)):.2f})")


if __name__ == "__main__":
    main()
