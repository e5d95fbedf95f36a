#!/usr/bin/env python3
"""SmartMixedClassifier against scikit-learn's MLPClassifier: test accuracy, fit time and
predict time on the same stratified splits, with the same hidden sizes, at each one's
defaults and at matched epochs (and batch size and learning rate).

Usage: python3 scripts/bench_sklearn.py [--mnist N] [--repeats 2]

Data: scikit-learn's bundled wine, breast cancer and 8x8 digits; with --mnist N, N
training images of data/mnist (its test set: 10 000 images). Each configuration runs
`--repeats` times, the two estimators alternating, and the fastest fit is reported (the
machine is shared); accuracies are deterministic for the fixed seeds. MLPClassifier gets a
StandardScaler in front, SmartMixed standardises itself (and records it in its export).
Prints a Markdown table.
"""
import argparse
import gzip
import math
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from smartmixed.sklearn import SmartMixedClassifier, auto_batch_size

REPO = Path(__file__).resolve().parents[1]
SEED = 0


def read_idx(path):
    data = gzip.open(path).read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def tables():
    for name, loader in [
        ("wine", datasets.load_wine),
        ("breast cancer", datasets.load_breast_cancer),
        ("digits", datasets.load_digits),
    ]:
        X, y = loader(return_X_y=True)
        split = train_test_split(X, y, test_size=0.25, stratify=y, random_state=SEED)
        yield name, (64, 32), split


def mnist(n):
    d = REPO / "data" / "mnist"
    X = read_idx(d / "train-images-idx3-ubyte.gz").reshape(60000, -1).astype(np.float32)
    y = read_idx(d / "train-labels-idx1-ubyte.gz")
    idx = np.random.default_rng(SEED).permutation(len(y))[:n]
    X_test = read_idx(d / "t10k-images-idx3-ubyte.gz").reshape(10000, -1).astype(np.float32)
    y_test = read_idx(d / "t10k-labels-idx1-ubyte.gz")
    return f"MNIST ({n} train)", (256, 128), (X[idx], X_test, y[idx], y_test)


def estimators(hidden, setting, rows):
    """(name, estimator) pairs for `setting`: "defaults" or "matched" (on `rows` training rows)."""
    ours = SmartMixedClassifier(hidden_layer_sizes=hidden, random_state=SEED)
    epochs = ours.phase1_epochs + ours.phase2_epochs
    batch = auto_batch_size(rows) if ours.batch_size == "auto" else ours.batch_size
    if setting == "defaults":
        mlp = MLPClassifier(hidden_layer_sizes=hidden, random_state=SEED)
    else:
        mlp = MLPClassifier(
            hidden_layer_sizes=hidden,
            max_iter=epochs,
            n_iter_no_change=epochs,
            tol=0.0,
            batch_size=batch,
            learning_rate_init=ours.learning_rate,
            random_state=SEED,
        )
    return [("SmartMixed", ours), ("MLPClassifier", make_pipeline(StandardScaler(), mlp))]


def epochs_of(est):
    return est.n_iter_ if hasattr(est, "n_iter_") else est[-1].n_iter_


def run(name, hidden, split, repeats, rows):
    X_train, X_test, y_train, y_test = split
    for setting in ("defaults", "matched"):
        best = {}
        for _ in range(repeats):
            for label, est in estimators(hidden, setting, len(y_train)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    t = time.perf_counter()
                    est.fit(X_train, y_train)
                    fit = time.perf_counter() - t
                acc = float((est.predict(X_test) == y_test).mean())
                pred = math.inf
                for _ in range(3):  # the first call included
                    t = time.perf_counter()
                    est.predict(X_test)
                    pred = min(pred, time.perf_counter() - t)
                old = best.get(label)
                best[label] = (
                    min(fit, old[0]) if old else fit,
                    min(pred, old[1]) if old else pred,
                    acc,
                    epochs_of(est),
                )
        (of, op, oa, oe), (mf, mp, ma, me) = best["SmartMixed"], best["MLPClassifier"]
        rows.append(
            f"| {name} | {setting} | {'-'.join(map(str, hidden))} | {100 * oa:.1f}% ({oe} ep) | "
            f"{100 * ma:.1f}% ({me} ep) | {of:.2f} s | {mf:.2f} s | {mf / of:.1f}x | "
            f"{1000 * op:.1f} ms | {1000 * mp:.1f} ms |"
        )
        print(rows[-1], flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", type=int, default=0, help="MNIST training images (0: skip)")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    rows = [
        "| data | setting | hidden | SmartMixed acc. | MLPClassifier acc. | SmartMixed fit | "
        "MLPClassifier fit | fit speed-up | SmartMixed predict | MLPClassifier predict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(rows), flush=True)
    for name, hidden, split in tables():
        run(name, hidden, split, args.repeats, rows)
    if args.mnist:
        run(*mnist(args.mnist), args.repeats, rows)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
