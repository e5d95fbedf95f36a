"""A model trained and exported by `smartmixed-cli` gives in Python what it gives in the
CLI: `eval`'s correct count on MNIST's test images, `predict`'s classes and probabilities
on table rows. Needs the CLI binary: $SMARTMIXED_CLI, else target/{release,debug}/."""
import gzip
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import smartmixed
from conftest import write_csv

REPO = Path(__file__).resolve().parents[2]
MNIST = REPO / "data" / "mnist"


def find_cli():
    if os.environ.get("SMARTMIXED_CLI"):
        return os.environ["SMARTMIXED_CLI"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        if (target / profile / "smartmixed-cli").is_file():
            return str(target / profile / "smartmixed-cli")
    pytest.skip("no smartmixed-cli binary (cargo build -p smartmixed-cli, or set SMARTMIXED_CLI)")


def cli(*args):
    out = subprocess.run([find_cli(), *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def read_idx(path):
    data = gzip.open(path).read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def test_cli_eval_and_python_count_the_same_correct_mnist_images(tmp_path):
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("data/mnist not present")
    find_cli()
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        "[model]\nhidden = [32]\n[phase1]\nepochs = 1\nlr = 3e-3\n[phase2]\nepochs = 1\nlr = 3e-3\n"
        f'[training]\nbatch_size = 64\n[data]\ndir = "{MNIST}"\ntrain_limit = 1500\ntest_limit = 200\n'
    )
    cli("train", "--config", cfg, "--out", tmp_path / "run", "--threads", "2")
    cli("export", "--run", tmp_path / "run", "--safetensors", tmp_path / "model")
    report = cli("eval", "--model", tmp_path / "model", "--data-dir", MNIST)
    correct, total = map(int, re.search(r"test accuracy: [\d.]+% \((\d+)/(\d+)\)", report).groups())
    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
    model = smartmixed.Model.load(tmp_path / "model")
    assert model.input["kind"] == "image" and model.input["shape"] == [28, 28]
    predicted = model.predict(images.astype(np.float32))  # raw pixels, [n, 28, 28]
    assert total == len(labels)
    assert int((predicted == labels).sum()) == correct
    flat = model.predict(images.reshape(len(images), -1).astype(np.float64))
    np.testing.assert_array_equal(flat, predicted)


def test_cli_predict_and_python_agree_on_table_rows(tmp_path, wine):
    X, y, names = wine
    find_cli()
    write_csv(tmp_path / "wine.csv", X, y, names)
    cfg = tmp_path / "wine.toml"
    cfg.write_text(
        "[model]\nhidden = [16]\n[phase1]\nepochs = 3\nlr = 1e-2\n[phase2]\nepochs = 3\nlr = 1e-2\n"
        f'[training]\nbatch_size = 16\n[data]\nfile = "{tmp_path / "wine.csv"}"\nlabel = "label"\n'
    )
    cli("train", "--config", cfg, "--out", tmp_path / "run", "--threads", "2")
    cli("export", "--run", tmp_path / "run", "--safetensors", tmp_path / "model")
    rows = X[:40]
    write_csv(tmp_path / "rows.csv", rows, y[:40], names)
    lines = cli("predict", "--model", tmp_path / "model", tmp_path / "rows.csv").splitlines()
    lines = [l for l in lines if l.startswith("row ")]
    model = smartmixed.Model.load(tmp_path / "model")
    probs = model.predict_proba(rows)
    assert len(lines) == len(rows)
    for i, line in enumerate(lines):
        m = re.match(rf"row {i}: class (\S+) \(p = [\d.]+\); probabilities (.*)$", line)
        cli_probs = [float(p.split(":")[1]) for p in m.group(2).split()]
        # predict prints 4 decimals; one row at a time (the GEMV) agrees with batches in 1e-5.
        np.testing.assert_allclose(probs[i], cli_probs, atol=6e-5)
        if np.sort(probs[i])[-1] - np.sort(probs[i])[-2] > 1e-4:
            assert model.classes[int(np.argmax(probs[i]))] == m.group(1)
