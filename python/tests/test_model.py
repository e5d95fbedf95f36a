"""`smartmixed.Model`: the runtime from Python, checked against an independent numpy
forward pass of the exported files."""
import threading
import tomllib

import numpy as np
import pytest

import smartmixed

ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: 1.0507009873554805
    * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
}


def read_safetensors(path):
    """The tensors of a safetensors file (F32 only), read by hand: an independent reader."""
    import json
    import struct

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32"
        a, b = t["data_offsets"]
        tensors[name] = np.frombuffer(data[8 + n + a : 8 + n + b], "<f4").reshape(t["shape"])
    return tensors


def numpy_logits(model_dir, raw):
    """The exported network in float64 numpy: preprocessing, layers, activation groups."""
    manifest = tomllib.loads((model_dir / "manifest.toml").read_text())
    tensors = read_safetensors(model_dir / "model.safetensors")
    inp = manifest["input"]
    x = raw.reshape(len(raw), -1).astype(np.float64) / inp["divisor"]
    if "mean" in inp:
        x = (x - np.array(inp["mean"])) / np.array(inp["std"])
    for i, layer in enumerate(manifest["layers"]):
        x = x @ tensors[f"layers.{i}.weight"].T.astype(np.float64) + tensors[f"layers.{i}.bias"]
        for g in layer.get("groups", []):
            s = slice(g["start"], g["start"] + g["len"])
            x[:, s] = ACTIVATIONS[g["activation"]](x[:, s])
    return x


def test_logits_match_an_independent_numpy_forward_pass(wine_model, wine):
    X, _, _ = wine
    model = smartmixed.Model.load(wine_model)
    expected = numpy_logits(wine_model, X)
    np.testing.assert_allclose(model.logits(X.astype(np.float32)), expected, rtol=1e-4, atol=1e-4)
    p = model.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert p.dtype == np.float32 and p.shape == (len(X), 3)
    np.testing.assert_array_equal(model.predict(X), np.argmax(expected, axis=1))


def test_float64_non_contiguous_and_small_batches_give_the_same_bits(wine_model, wine):
    X, _, _ = wine
    model = smartmixed.Model.load(wine_model, threads=2)
    x32 = np.ascontiguousarray(X, dtype=np.float32)
    full = model.logits(x32)
    np.testing.assert_array_equal(model.logits(x32.astype(np.float64)), full)
    fortran = np.asfortranarray(x32)
    np.testing.assert_array_equal(model.logits(fortran), full)
    np.testing.assert_array_equal(model.logits(x32[::2]), full[::2])
    for n in (1, 2, 3, 5):
        np.testing.assert_array_equal(model.logits(x32[:n]), full[:n])
    assert model.logits(x32[:0]).shape == (0, 3)


def test_properties_describe_the_manifest(wine_model, wine):
    _, y, names = wine
    model = smartmixed.Model.load(wine_model)
    assert model.classes == sorted(set(y))
    assert model.input["kind"] == "table"
    assert model.input["shape"] == [13] and model.input["feature_names"] == names
    assert len(model.input["mean"]) == 13 and model.input["divisor"] == 1.0
    assert [sum(n for _, n in layer) for layer in model.groups] == [16, 8]
    manifest = tomllib.loads(model.manifest)
    assert [[(g["activation"], g["len"]) for g in l["groups"]] for l in manifest["layers"][:-1]] == model.groups


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 12), np.float32), r"input has shape \[2, 12\], expected \(n, 13\) for a table of 13 features"),
        (np.zeros(13, np.float32), r"input has shape \[13\]"),
        (np.zeros((2, 13), np.int64), "dtype int64, expected a numpy array of float32 or float64"),
        ([[0.0] * 13], "input is a list, expected a numpy array"),
    ],
)
def test_wrong_shapes_and_dtypes_are_value_errors(wine_model, x, message):
    model = smartmixed.Model.load(wine_model)
    with pytest.raises(ValueError, match=message):
        model.predict(x)


def test_non_finite_values_are_value_errors_with_the_runtimes_message(wine_model):
    model = smartmixed.Model.load(wine_model)
    x = np.ones((5, 13), np.float32)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"^input row 3, value 2 is NaN, expected a finite number$"):
        model.logits(x)
    x[3, 2] = 1e300  # float64 beyond float32: infinite after the conversion
    with pytest.raises(ValueError, match="input row 3, value 2 is inf"):
        model.logits(x.astype(np.float64) * np.where(np.isclose(x, 1e300), 1e300, 1))


def test_missing_model_is_an_os_error_and_threads_zero_a_value_error(tmp_path, wine_model):
    with pytest.raises(OSError, match="manifest.toml|model.safetensors"):
        smartmixed.Model.load(tmp_path)
    with pytest.raises(ValueError, match="threads = 0"):
        smartmixed.Model.load(wine_model, threads=0)


def test_the_gil_is_released_while_the_runtime_runs(wine_model):
    """Another Python thread makes progress during one long call."""
    model = smartmixed.Model.load(wine_model, threads=1)
    x = np.random.default_rng(0).normal(size=(400_000, 13)).astype(np.float32)
    ticks, done = [0], threading.Event()

    def count():
        while not done.is_set():
            ticks[0] += 1

    t = threading.Thread(target=count)
    t.start()
    try:
        before = ticks[0]
        model.logits(x)
        during = ticks[0] - before
    finally:
        done.set()
        t.join()
    assert during > 1000
