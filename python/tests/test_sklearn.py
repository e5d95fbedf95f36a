"""`SmartMixedClassifier` under scikit-learn's own estimator checks, and what a user of
`MLPClassifier` expects of it: labels of any kind, pickling, export, reproducibility."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

import smartmixed
from smartmixed.sklearn import EXPECTED_FAILED_CHECKS, SmartMixedClassifier


def tiny(**kw):
    """Small and fast, yet enough for the checks' easy problems."""
    params = dict(
        hidden_layer_sizes=(16,),
        phase1_epochs=4,
        phase2_epochs=6,
        learning_rate=1e-2,
        batch_size=16,
        n_jobs=1,
        random_state=0,
    )
    params.update(kw)
    return SmartMixedClassifier(**params)


@parametrize_with_checks([tiny()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def split(wine):
    X, y, _ = wine
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def fitted(split):
    X_train, _, y_train, _ = split
    return tiny(hidden_layer_sizes=(16, 8)).fit(X_train, y_train)


def test_string_labels_fit_well_and_name_the_classes(fitted, split):
    _, X_test, _, y_test = split
    assert list(fitted.classes_) == ["class_0", "class_1", "class_2"]
    assert fitted.n_features_in_ == 13
    assert fitted.score(X_test, y_test) > 0.85
    assert set(fitted.predict(X_test)) <= set(fitted.classes_)
    assert fitted.n_iter_ == 10
    assert [sum(layer.values()) for layer in fitted.choices_] == [16, 8]
    assert set(fitted.choices_[0]) <= set(fitted.pool)


def test_integer_labels_keep_their_values(split):
    X_train, X_test, y_train, _ = split
    codes = {"class_0": 7, "class_1": -3, "class_2": 12}
    clf = tiny().fit(X_train, np.array([codes[v] for v in y_train]))
    assert list(clf.classes_) == [-3, 7, 12]
    assert clf.predict(X_test).dtype == clf.classes_.dtype


def test_same_random_state_same_model_other_state_other_model(fitted, split):
    X_train, X_test, y_train, _ = split
    again = clone(fitted).fit(X_train, y_train)
    np.testing.assert_array_equal(again.predict_proba(X_test), fitted.predict_proba(X_test))
    other = clone(fitted).set_params(random_state=1).fit(X_train, y_train)
    assert not np.array_equal(other.predict_proba(X_test), fitted.predict_proba(X_test))


def test_pickle_round_trip_predicts_the_same(fitted, split):
    _, X_test, _, _ = split
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(X_test), fitted.predict_proba(X_test))
    assert restored.choices_ == fitted.choices_


def test_export_loads_in_the_runtime_with_the_same_probabilities(fitted, split, tmp_path):
    _, X_test, _, _ = split
    fitted.export(tmp_path / "model")
    model = smartmixed.Model.load(tmp_path / "model")
    np.testing.assert_allclose(model.predict_proba(X_test), fitted.predict_proba(X_test), rtol=1e-6)
    assert model.classes == list(fitted.classes_)
    assert model.groups == smartmixed.Model.from_bytes(fitted._weights).groups
    with pytest.raises(FileExistsError, match="already holds model.safetensors"):
        fitted.export(tmp_path / "model")
    fitted.export(tmp_path / "model", force=True)


def test_feature_names_are_kept_from_a_dataframe(split):
    pd = pytest.importorskip("pandas")
    X_train, _, y_train, _ = split
    cols = [f"f{i}" for i in range(13)]
    clf = tiny().fit(pd.DataFrame(X_train, columns=cols), y_train)
    assert list(clf.feature_names_in_) == cols
    assert smartmixed.Model.from_bytes(clf._weights).input["feature_names"] == cols


def test_fixed_baseline_and_bad_parameters(split):
    X_train, _, y_train, _ = split
    relu = tiny(activation="relu").fit(X_train, y_train)
    assert relu.choices_ == [{"relu": 16}]
    with pytest.raises(ValueError, match="model.pool"):
        tiny(pool=("relu", "nope")).fit(X_train, y_train)
    with pytest.raises(ValueError, match="y holds 1 class"):
        tiny().fit(X_train, np.zeros(len(X_train)))


def test_defaults_train_on_every_row_with_auto_batches_and_a_monitor_sample():
    """At its defaults the estimator trains on every row (as `MLPClassifier` without
    `early_stopping`) and picks epochs on at most 2000 of them; "auto" batches are n // 50
    within 32 to 256 rows; a held-out fraction still holds rows out."""
    from smartmixed.sklearn import MONITOR_ROWS, _monitor_sample, auto_batch_size

    assert [auto_batch_size(n) for n in (10, 133, 1600, 2000, 10000, 60000)] == [32, 32, 32, 40, 200, 256]
    sample = _monitor_sample(5000, 7)
    assert len(sample) == MONITOR_ROWS == 2000 and len(set(sample)) == 2000
    assert list(sample) == sorted(sample) and sample.max() < 5000
    np.testing.assert_array_equal(sample, _monitor_sample(5000, 7))
    np.testing.assert_array_equal(_monitor_sample(30, 7), np.arange(30))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2500, 4))
    y = (X[:, 0] > 0).astype(int)
    clf = SmartMixedClassifier(hidden_layer_sizes=(8,), phase1_epochs=1, phase2_epochs=1, random_state=0)
    assert clf._config(1, 0.1, len(X))["training"]["batch_size"] == 50
    assert clf._config(1, 0.1, len(X))["training"]["clip_norm"] == 0.0
    clf.fit(X, y)
    assert (clf.summary_["train_samples"], clf.summary_["validation_samples"]) == (2500, 2000)
    held = clone(clf).set_params(validation_fraction=0.1).fit(X, y)
    assert (held.summary_["train_samples"], held.summary_["validation_samples"]) == (2250, 250)
    with pytest.raises(ValueError, match="The 'batch_size' parameter of SmartMixedClassifier must be"):
        clone(clf).set_params(batch_size="big").fit(X, y)


def test_a_failed_or_interrupted_refit_keeps_the_previous_model(split, monkeypatch):
    """A re-fit that fails (in validation, in the trainer, or by an exception raised during
    training, as Ctrl-C does) leaves the previous fit whole: its classes next to its model,
    its features; nothing of the failed call."""
    X_train, X_test, y_train, _ = split
    clf = tiny().fit(X_train, y_train)
    before = (clf.predict(X_test), clf.predict_proba(X_test), list(clf.classes_), clf.n_features_in_)
    codes = {"class_0": 10, "class_1": 20, "class_2": 30}
    numbers = np.array([codes[v] for v in y_train])

    def unchanged():
        assert list(clf.classes_) == before[2] and clf.n_features_in_ == before[3]
        np.testing.assert_array_equal(clf.predict(X_test), before[0])
        np.testing.assert_array_equal(clf.predict_proba(X_test), before[1])

    with pytest.raises(ValueError, match="model.pool"):
        clf.set_params(pool=("relu", "nope")).fit(X_train[:, :5], numbers)
    unchanged()
    with pytest.raises(ValueError, match="y holds 1 class"):
        clf.set_params(pool=("relu", "tanh")).fit(X_train[:, :5], np.zeros(len(X_train)))
    unchanged()

    def interrupt(record):
        raise KeyboardInterrupt

    monkeypatch.setattr(smartmixed, "_printer", interrupt)
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(verbose=True).fit(X_train[:, :5], numbers)
    unchanged()
    monkeypatch.undo()
    # And a re-fit that succeeds replaces everything.
    clf.set_params(verbose=False).fit(X_train[:, :5], numbers)
    assert list(clf.classes_) == [10, 20, 30] and clf.n_features_in_ == 5
    assert set(clf.predict(X_test[:, :5])) <= {10, 20, 30}


def _blobs(n=200, d=4, k=3, seed=0):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, k, n)
    return rng.normal(size=(n, d)) + 3 * np.eye(k, d)[y], y


@pytest.mark.parametrize("offset, spread", [(1e6, 0.01), (1e8, 1.0), (1.7e9, 10.0)])
def test_a_large_offset_and_small_spread_trains_as_standardscaler_would(offset, spread):
    """float64 features whose spread float32 cannot resolve at their offset (timestamps,
    coordinates) are standardised in float64, as by StandardScaler: the fit predicts as a fit
    on the unshifted data does, and as well as StandardScaler + MLPClassifier."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs()
    shifted = offset + spread * X
    assert len(np.unique(shifted[:, 0].astype(np.float32))) < 10  # float32 collapses it
    clf = tiny(phase2_epochs=10).fit(shifted, y)
    reference = tiny(phase2_epochs=10).fit(X, y)
    assert np.mean(clf.predict(shifted) == reference.predict(X)) >= 0.97
    mlp = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=300, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLPClassifier's ConvergenceWarning
        oracle = mlp.fit(shifted, y).score(shifted, y)
    assert clf.score(shifted, y) >= oracle - 0.03
    # Pickled, it standardises the same way.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(shifted), clf.predict_proba(shifted))
    # A list (which scikit-learn converts to the first dtype allowed) is read as float64
    # too: as float32 the feature had collapsed before its float64 standardisation.
    np.testing.assert_array_equal(clf.predict_proba(shifted.tolist()), clf.predict_proba(shifted))
    np.testing.assert_array_equal(clf.predict(shifted.tolist()), clf.predict(shifted))


def test_exports_standardise_raw_rows_and_warn_where_float32_cannot(tmp_path):
    """An export takes raw rows and standardises them in float32 (the CLI's and the
    runtime's meaning of a manifest): for ordinary features it predicts what the estimator
    does, with the estimator's mean and std in its manifest; for a feature float32 cannot
    resolve, export warns, naming it."""
    X, y = _blobs()
    X = X * [1, 10, 100, 0.1] + [5, -50, 1000, 0]
    clf = tiny().fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.export(tmp_path / "plain")
    model = smartmixed.Model.load(tmp_path / "plain")
    np.testing.assert_allclose(model.input["mean"], X.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(model.input["std"], X.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(model.predict_proba(X), clf.predict_proba(X), rtol=1e-5, atol=1e-6)
    shifted = X.copy()
    shifted[:, 2] = 1e6 + 0.01 * X[:, 2]
    clf = tiny().fit(shifted, y)
    with pytest.warns(UserWarning, match=r"1 feature\(s\) against their offset: `x2` \(mean 100001\d"):
        clf.export(tmp_path / "shifted")
    model = smartmixed.Model.load(tmp_path / "shifted")
    assert model.input["mean"][2] == pytest.approx(1e6 + 0.01 * X[:, 2].mean())
    assert model.predict(shifted).shape == (len(X),)
    # A constant column at a large value loses nothing in float32 ((c - c) / 1 = 0): the
    # model standardises it itself and export does not warn.
    constant = np.column_stack([X, np.full(len(X), 1e6 + 0.3)])
    clf = tiny().fit(constant, y)
    assert clf._standardisation is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.export(tmp_path / "constant")
    np.testing.assert_allclose(
        smartmixed.Model.load(tmp_path / "constant").predict_proba(constant), clf.predict_proba(constant), atol=1e-6
    )


def test_values_beyond_float32_are_named():
    """A finite float64 value beyond float32's range is refused naming its row, column and
    value (not as "inf"); standardised first, it trains, as StandardScaler's would."""
    X, y = _blobs()
    big = X.copy()
    big[0, 0] = 1e39
    with pytest.raises(ValueError, match=r"^X row 0, column 0: value 1e\+39 is beyond float32's range"):
        tiny(standardize=False).fit(big, y)
    clf = tiny().fit(X, y)
    test = X[:5].copy()
    test[2, 1] = -1e39
    with pytest.raises(ValueError, match=r"^X row 2, column 1: value -1e\+39 is beyond float32's range"):
        clf.predict(test)
    assert tiny().fit(big, y).predict(X).shape == (len(X),)


@pytest.mark.parametrize(
    "param, value",
    [
        ("validation_fraction", -0.5),
        ("validation_fraction", 0.0),
        ("validation_fraction", 1.0),
        ("validation_fraction", 1.5),
        ("validation_fraction", float("nan")),
        ("batch_size", True),
        ("batch_size", 2.7),
        ("batch_size", 0),
        ("phase1_epochs", 2.9),
        ("phase2_epochs", -1),
        ("patience", 2.5),
        ("patience", 0),
        ("hidden_layer_sizes", (7.9,)),
        ("hidden_layer_sizes", (True,)),
        ("hidden_layer_sizes", (8, 0)),
        ("hidden_layer_sizes", ()),
        ("standardize", "no"),
        ("n_jobs", 0),
        ("n_jobs", 1.5),
        ("n_jobs", True),
        ("learning_rate", float("nan")),
        ("learning_rate", float("inf")),
        ("learning_rate", 0.0),
        ("tau", float("nan")),
        ("tau", float("inf")),
        ("clip_norm", float("nan")),
        ("clip_norm", float("inf")),
        ("clip_norm", -1.0),
        ("logit_learning_rate", float("inf")),
        ("pool", "relu"),
        ("pool", ("relu", 3)),
        ("transition", "sometimes"),
        ("select", "loss"),
        ("phase2_epochs", 0),  # with activation=None: phase 2 is the model kept
    ],
)
def test_invalid_parameters_are_refused_in_fit_naming_the_parameter(param, value):
    """Each bad value gets scikit-learn's message, naming the parameter, from fit (not
    __init__, which only stores); it was silently ignored, truncated or coerced before."""
    X, y = _blobs(n=60)
    clf = tiny(**{param: value})
    assert clf.get_params()[param] is value
    with pytest.raises(ValueError, match=rf"^The '{param}' parameter of SmartMixedClassifier must be .* Got .* instead\.$"):
        clf.fit(X, y)


def test_zero_epochs_of_one_phase_where_it_is_allowed():
    """phase2_epochs=0 is refused with the two phases (it failed after phase 1 with an
    OSError naming a deleted temporary file) but trains a fixed baseline; phase1_epochs=0
    trains the mixed network from the start of phase 2."""
    X, y = _blobs(n=60)
    assert tiny(activation="relu", phase2_epochs=0).fit(X, y).n_iter_ == 4
    assert tiny(phase1_epochs=0).fit(X, y).score(X, y) > 0.8


def test_a_class_the_validation_split_would_hold_out_whole_is_refused():
    """With validation_fraction a class of one sample would go to validation alone (and the
    model never train on it): refused naming the class, as MLPClassifier(early_stopping=True)
    refuses it; at None, or a fraction that keeps a sample of it, the fit trains on it."""
    X, y = _blobs(n=60)
    y = np.array(["a", "b", "c"], dtype=object)[y]
    y[0] = "lonely"
    with pytest.raises(ValueError, match=r"validation_fraction=0.5 would hold out every sample of class 'lonely' \(1 member\)"):
        tiny(validation_fraction=0.5).fit(X, y)
    clf = tiny(validation_fraction=0.2).fit(X, y)
    assert "lonely" in clf.classes_
    assert tiny().fit(X, y).summary_["train_samples"] == 60
