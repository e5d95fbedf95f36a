"""`smartmixed.Model`: the runtime from Python, checked against an independent numpy
forward pass of the exported files."""
import os
import threading
import time
import warnings
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
    big = np.ones((5, 13), np.float64)
    big[3, 2] = 1e300  # beyond float32: infinite after the conversion
    with pytest.raises(ValueError, match="input row 3, value 2 is inf"):
        model.logits(big)


def test_missing_model_is_an_os_error_and_threads_zero_a_value_error(tmp_path, wine_model):
    with pytest.raises(OSError, match="manifest.toml|model.safetensors"):
        smartmixed.Model.load(tmp_path)
    with pytest.raises(ValueError, match="threads = 0"):
        smartmixed.Model.load(wine_model, threads=0)


@pytest.fixture(scope="module")
def wide_classifier():
    """A classifier of 784 inputs, where batches under four rows would take the runtime's GEMV."""
    from smartmixed.sklearn import SmartMixedClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 784)).astype(np.float32)
    y = (X[:, :10].sum(axis=1) > 0).astype(int)
    clf = SmartMixedClassifier(hidden_layer_sizes=(256, 128), phase1_epochs=1, phase2_epochs=1, random_state=0)
    return clf.fit(X, y), X


@pytest.fixture(scope="module")
def wide_model(wide_classifier):
    clf, X = wide_classifier
    return clf._model, X


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_batches_preprocessed_in_parallel_give_the_bits_of_small_ones(wide_classifier, threads, tmp_path):
    """From 2^18 values the raw rows are preprocessed in blocks split over the model's
    threads (uneven parts here: 1201 rows, blocks of 20): every row gets the bits it gets
    in a small batch (one thread), float64 too, matching an independent numpy forward pass;
    a NaN, or a value the standardisation takes out of float32's range, far into the batch
    gets the runtime's own message."""
    clf, X = wide_classifier
    model = smartmixed.Model.from_bytes(clf._weights, threads=threads)
    big = np.repeat(X, 5, axis=0)[:1201]
    big += np.arange(len(big), dtype=np.float32)[:, None] * 1e-3
    full = model.logits(big)
    for start in (0, 399, 400, 801, 1196):
        np.testing.assert_array_equal(model.logits(big[start : start + 5]), full[start : start + 5])
    np.testing.assert_array_equal(model.logits(big.astype(np.float64)), full)
    clf.export(tmp_path)
    np.testing.assert_allclose(full, numpy_logits(tmp_path, big), rtol=1e-3, atol=1e-3)
    bad = big.copy()
    bad[1000, 700] = np.nan
    with pytest.raises(ValueError, match=r"^input row 1000, value 700 is NaN, expected a finite number$"):
        model.logits(bad)
    feature = int(np.argmax(np.array(model.input["std"]) < 0.9))
    assert model.input["std"][feature] < 0.9
    bad = big.copy()
    bad[1100, feature] = -np.finfo(np.float32).max
    with pytest.raises(ValueError, match=rf"^input row 1100, feature `x{feature}`: raw value .* becomes -inf after"):
        model.logits(bad)
    np.testing.assert_array_equal(model.logits(big), full)  # the reused buffers hold nothing stale


def test_every_row_gets_the_same_bits_in_any_batch(wide_model):
    """Batches of 1 to 3 rows give the bits those rows get in a larger batch (the GEMV
    they would take agrees with the matmul only within 1e-5; scikit-learn's invariance
    checks compare exactly)."""
    model, X = wide_model
    full = model.logits(X)
    for n in (1, 2, 3, 4, 5):
        np.testing.assert_array_equal(model.logits(X[:n]), full[:n])
    np.testing.assert_array_equal(model.logits(X[7:8]), full[7:8])


def test_the_gil_is_released_while_the_runtime_runs(wide_model):
    """A Python thread keeps running while another thread is inside a long call: the
    longest pause between its iterations stays far below the call's length."""
    model, X = wide_model
    x = np.repeat(X, 100, axis=0)  # 30 000 rows
    t = time.perf_counter()
    model.logits(x)
    alone = time.perf_counter() - t
    done = threading.Event()
    caller = threading.Thread(target=lambda: (model.logits(x), done.set()))
    gaps, last = [], time.perf_counter()
    caller.start()
    while not done.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    caller.join()
    assert alone > 0.05, "the call is too short to tell"
    assert max(gaps) < alone / 2, (max(gaps), alone)


def _in_a_forked_child(compute, timeout=20):
    """`compute()` (bytes) run in a `fork()`ed child: what it returned, or None if the child
    failed; a child still running after `timeout` seconds is killed (a hang)."""
    r, w = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.write(w, compute())
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(r)
            pytest.fail(f"the forked child hung for {timeout} s")
        time.sleep(0.01)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    return out if os.waitstatus_to_exitcode(status) == 0 else None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
@pytest.mark.parametrize("rows", [1, 10])
def test_a_forked_child_predicts_what_its_parent_does(wine_model, wine, wide_classifier, rows):
    """A model loaded (and used: its workers started) before `fork()` predicts in the child
    ("load once, fork workers" servers, multiprocessing's fork context) with its own pool of
    two threads and with the process's pool (the estimator's default), and the child can
    still make and use a new model."""
    X, _, _ = wine
    own = smartmixed.Model.load(wine_model, threads=2)
    shared = smartmixed.Model.load(wine_model)
    clf, wide = wide_classifier
    x = np.ascontiguousarray(X[:rows], dtype=np.float32)
    expected = [own.logits(x), shared.logits(x), clf.predict_proba(wide[:rows])]

    def child():
        fresh = smartmixed.Model.load(wine_model, threads=2)
        got = [own.logits(x), shared.logits(x), clf.predict_proba(wide[:rows]), fresh.logits(x)]
        del own_copy[:]  # dropping a model made before the fork must not hang either
        return b"".join(np.ascontiguousarray(a).tobytes() for a in got)

    own_copy = [smartmixed.Model.load(wine_model, threads=2)]
    own_copy[0].logits(x)
    out = _in_a_forked_child(child)
    assert out is not None, "the child raised"
    expected.append(expected[0])
    assert out == b"".join(np.ascontiguousarray(a).tobytes() for a in expected)


def test_misaligned_arrays_are_copied(wine_model, wine):
    """A C-contiguous view at an odd byte offset (np.frombuffer(..., offset=1)) is a valid
    array: it is read from an aligned copy, with the aligned array's bits."""
    X, _, _ = wine
    model = smartmixed.Model.load(wine_model, threads=2)
    for dtype in (np.float32, np.float64):
        x = np.ascontiguousarray(X[:20], dtype=dtype)
        odd = np.frombuffer(b"\0" + x.tobytes(), dtype, offset=1).reshape(x.shape)
        assert not odd.flags.aligned and odd.flags.c_contiguous
        np.testing.assert_array_equal(model.logits(odd), model.logits(x))
        np.testing.assert_array_equal(model.predict(odd), model.predict(x))


def test_paths_bytes_and_scalars_are_taken_or_refused_clearly(wine_model, wine, tmp_path):
    """`load` takes str, bytes and os.PathLike paths; `from_bytes` takes bytes, bytearray and
    memoryview; a numpy scalar is named as a scalar, not as "an array of dtype float32"."""
    import pathlib

    X, _, _ = wine
    expected = smartmixed.Model.load(str(wine_model)).logits(X)
    for path in (os.fsencode(wine_model), pathlib.Path(wine_model)):
        np.testing.assert_array_equal(smartmixed.Model.load(path).logits(X), expected)
    with pytest.raises(TypeError, match="expected str, bytes or os.PathLike"):
        smartmixed.Model.load(3)
    data = (wine_model / "model.safetensors").read_bytes()
    for weights in (data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(smartmixed.Model.from_bytes(weights).logits(X), expected)
    with pytest.raises(TypeError, match="weights is a int, expected bytes, bytearray or memoryview"):
        smartmixed.Model.from_bytes(5)
    model = smartmixed.Model.load(wine_model)
    with pytest.raises(ValueError, match=r"^input is a numpy scalar \(float32\), not an array, expected a numpy array"):
        model.predict_proba(np.float32(1))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_place_of_a_model_file_is_refused_not_waited_on(wine_model, tmp_path):
    """`load` on a directory whose model.safetensors is a FIFO raises OSError at once (it
    blocked forever in open); run in a child process so that a hang fails the test."""
    import shutil
    import subprocess
    import sys

    d = tmp_path / "fifo"
    d.mkdir()
    shutil.copy(wine_model / "manifest.toml", d)
    os.mkfifo(d / "model.safetensors")
    code = (
        "import sys, smartmixed\n"
        "try:\n    smartmixed.Model.load(sys.argv[1])\n"
        "except OSError as e:\n    print(e)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("Model.load waited on the FIFO")
    assert "model.safetensors: not a regular file (a FIFO, socket or device)" in out.stdout, out
