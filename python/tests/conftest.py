"""Shared fixtures: small data sets and a tiny model trained through the package."""
import csv

import numpy as np
import pytest
from sklearn.datasets import load_wine

import smartmixed


def write_csv(path, X, y, names):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(names) + ["label"])
        for row, label in zip(X, y):
            w.writerow([repr(float(v)) for v in row] + [label])


@pytest.fixture(scope="session")
def wine():
    d = load_wine()
    names = [n.replace("/", "_") for n in d.feature_names]
    return d.data, np.array(d.target_names)[d.target], names


@pytest.fixture(scope="session")
def wine_csv(tmp_path_factory, wine):
    X, y, names = wine
    path = tmp_path_factory.mktemp("data") / "wine.csv"
    write_csv(path, X, y, names)
    return path


def tiny_config(csv_path):
    return {
        "model": {"hidden": [16, 8]},
        "phase1": {"epochs": 3, "lr": 1e-2},
        "phase2": {"epochs": 3, "lr": 1e-2},
        "training": {"batch_size": 16, "seed": 1},
        "data": {"file": str(csv_path), "label": "label", "validation_fraction": 0.15},
    }


@pytest.fixture(scope="session")
def wine_model(tmp_path_factory, wine_csv):
    """A table model trained by `smartmixed.train` and exported: its directory."""
    base = tmp_path_factory.mktemp("wine")
    smartmixed.train(tiny_config(wine_csv), out=base / "run", verbose=False)
    smartmixed.export(base / "run", base / "model")
    return base / "model"
