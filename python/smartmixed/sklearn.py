"""`SmartMixedClassifier`: a scikit-learn classifier trained by the Rust SmartMixed trainer
(phase 1 picks each hidden neuron's activation, phase 2 trains the frozen mix) and run by
the Rust runtime. Its fitted state is the exported model's safetensors bytes, so it
pickles, and `export(dir)` writes the files `smartmixed-cli` and `smartmixed.Model` load.
Features are standardised in float64 (as `StandardScaler`) before training; where float32
cannot resolve a feature's spread at its offset (`1e6 + 0.01 x`), the estimator keeps that
float64 standardisation and applies it before the model, while an export, which takes raw
rows and standardises them in float32, warns.

    from smartmixed.sklearn import SmartMixedClassifier
    clf = SmartMixedClassifier(hidden_layer_sizes=(32, 16), random_state=0).fit(X, y)
    clf.predict(X_test); clf.choices_        # per hidden layer, neurons per activation
"""
import json
import math
import os
import tempfile
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from . import Model, _native

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # older: the estimator's own method
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)


# The runtime refuses NaN and infinite values itself (a `ValueError` naming the row), so
# predict skips scikit-learn's own pass over the data (5 ms of a 10k-row MNIST predict).
import sklearn as _sklearn
from sklearn.utils.fixes import parse_version as _parse_version

_NO_FINITE_CHECK = (
    {"ensure_all_finite": False}
    if _parse_version(_sklearn.__version__) >= _parse_version("1.6")
    else {"force_all_finite": False}
)


# The paper's six candidate activations.
PAPER_POOL = ("relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu")

# Checks of `sklearn.utils.estimator_checks` that cannot hold, with the reason (passed to
# `parametrize_with_checks(expected_failed_checks=...)`; `_more_tags` on scikit-learn < 1.6).
# Empty: every check passes (python/tests/test_sklearn.py).
EXPECTED_FAILED_CHECKS = {}


def _scratch_dir():
    """Where a fit's run directory goes: memory (/dev/shm) where there is one. The trainer
    writes every file atomically with fsync, which costs ~10 ms an epoch on a disk and is
    pointless for a directory deleted after the fit (wine: 0.7 s on disk, 0.06 s in memory)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


# The most training rows `validation_fraction=None` evaluates each epoch: enough to tell
# epochs apart, and a fifth of a training epoch's cost at most on 10k MNIST rows.
MONITOR_ROWS = 2000


def auto_batch_size(n):
    """`batch_size="auto"` for `n` training rows: about 50 steps an epoch, 32 to 256 rows.
    Small tables keep batches of 32 (the paper's); on 10k MNIST rows an epoch at 200 costs
    about two thirds of one at 32 (measured) and learned more at 20 epochs."""
    return int(min(256, max(32, n // 50)))


def _monitor_sample(n, seed):
    """Sorted indices of at most `MONITOR_ROWS` of `n` training rows, fixed by `seed`."""
    if n <= MONITOR_ROWS:
        return np.arange(n)
    return np.sort(np.random.RandomState(seed).choice(n, MONITOR_ROWS, replace=False))


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _beyond_float32(X, what="X"):
    """A ValueError naming the first finite value of `X` beyond float32's range (which the
    runtime computes in), or None."""
    X = np.asarray(X)
    if X.dtype.kind != "f" or X.dtype.itemsize <= 4:
        return None
    with np.errstate(invalid="ignore"):
        beyond = np.isfinite(X) & (np.abs(X) > _FLOAT32_MAX)
    if not beyond.any():
        return None
    at = tuple(int(i) for i in np.argwhere(beyond)[0])
    where = f"row {at[0]}, column {at[1]}" if len(at) == 2 else f"index {at}"
    return ValueError(
        f"{what} {where}: value {float(X[at])!r} is beyond float32's range (+-{_FLOAT32_MAX:.4g}), "
        "expected a value the model's float32 arithmetic can hold"
    )


def _float32(X):
    """`X` as C-contiguous float32 (it is finite); a value beyond float32's range is an error
    naming it."""
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(x).all():
        raise _beyond_float32(X) or ValueError("X holds values that are not finite")
    return x


def _standardised(X, mean, scale, finite=True):
    """`(X - mean) / scale` computed in float64, then C-contiguous float32. With `finite`
    (X is finite), a standardised value beyond float32 is an error naming it."""
    z = np.subtract(X, mean, dtype=np.float64)
    z /= scale
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.ascontiguousarray(z, dtype=np.float32)
    if finite and not np.isfinite(x).all():
        raise _beyond_float32(z, "standardised X") or ValueError("X holds values that are not finite")
    return x


# The rounding error, in standard deviations, of a raw float32 value that a feature may have
# before its standardisation is left to the model (float32, as in every export): a feature
# whose spread is small against its offset (1e6 + 0.01 x) is standardised in float64 first.
FLOAT32_TOLERANCE = 1e-3


def _float32_loses(X, mean, scale):
    """Per feature, whether standardising the rows `X` in float32, as the runtime does with a
    manifest's mean and std (`(x - mean) / std` on the raw values cast to float32), strays
    more than `FLOAT32_TOLERANCE` standard deviations from the float64 standardisation."""
    with np.errstate(over="ignore", invalid="ignore"):
        m32, s32 = mean.astype(np.float32), scale.astype(np.float32)
        runtime = (np.asarray(X, dtype=np.float32) - m32) / s32
        err = np.abs(runtime.astype(np.float64) - (X - mean) / scale).max(axis=0, initial=0.0)
    return ~(err <= FLOAT32_TOLERANCE)


def _as_lists(mean, scale):
    """A float64 standardisation as the float32 lists of a manifest."""
    with np.errstate(over="ignore"):
        return mean.astype(np.float32).tolist(), scale.astype(np.float32).tolist()


def _split_leaves_both(counts, fraction):
    """Whether the trainer's stratified split (per class, `round(count * fraction)` items to
    validation, rounding half away from zero, but never a class's every member) leaves
    items on both sides."""
    val = sum(min(math.floor(c * fraction + 0.5), max(c - 1, 0)) for c in counts)
    return 0 < val < sum(counts)


class SmartMixedClassifier(ClassifierMixin, BaseEstimator):
    """An MLP whose hidden neurons each choose their activation from `pool`.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
        Widths of the hidden layers.
    pool : tuple of str
        Candidate activations of phase 1 (any registered name).
    activation : str or None
        `None`: SmartMixed's two phases. A name: a plain MLP with that activation everywhere
        (the paper's baselines), trained for `phase1_epochs + phase2_epochs` epochs.
    phase1_epochs, phase2_epochs : int
        Epoch budgets of the selection phase and of the mixed network. The defaults (5 and
        15) were chosen on scikit-learn's wine, breast cancer and digits and on 10k MNIST
        images (README, "Against scikit-learn's MLPClassifier"); the paper uses 20 + 40.
    transition : {"fixed", "auto"}
        When phase 1 ends: after `phase1_epochs`, or once the choices settle.
    learning_rate : float
        Adam's learning rate in both phases.
    logit_learning_rate : float or None
        The selection logits' own learning rate (`None`: `learning_rate`).
    tau : float
        Gumbel-softmax temperature of phase 1.
    batch_size : int or "auto"
        Rows per step; "auto": `auto_batch_size(n)`, n // 50 within 32 to 256.
    patience : int or None
        Early stopping of phase 2: epochs without improvement of the validation figure.
    validation_fraction : float or None
        Share of each class held out to pick the best epoch (and for `patience`). `None`
        (the default, as `MLPClassifier` without `early_stopping`; also where the data are
        too small to hold any out) trains on every row and picks epochs by the loss on the
        training rows, at most `MONITOR_ROWS` of them (a fixed random sample).
    select : {"val_loss", "val_accuracy"}
        The validation figure that picks each phase's best epoch.
    standardize : bool
        Standardise features with the training data's mean and standard deviation, computed
        and applied in float64 as `StandardScaler` does (recorded in the exported model,
        which applies it to raw inputs in float32; `export` warns for features whose spread
        float32 cannot resolve at their offset).
    clip_norm : float
        Global gradient-norm clip (0: off, the default, as `MLPClassifier`; the CLI's
        configs clip at 1).
    n_jobs : int or None
        Training and inference threads (`None`: every core). Results are reproducible for a
        fixed `random_state` and thread count.
    random_state : int, RandomState or None
        Seeds weights, shuffling, the validation split and Gumbel noise.
    verbose : bool
        Print a line per epoch.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_ (when fitted on named columns),
    n_iter_ : epochs trained over both phases,
    choices_ : per hidden layer, a dict activation -> neurons (the exported groups),
    summary_ : the trainer's summary (validation figures, epochs, seconds).
    """

    def __init__(
        self,
        hidden_layer_sizes=(64, 32),
        pool=PAPER_POOL,
        activation=None,
        phase1_epochs=5,
        phase2_epochs=15,
        transition="fixed",
        learning_rate=3e-3,
        logit_learning_rate=None,
        tau=0.3,
        batch_size="auto",
        patience=None,
        validation_fraction=None,
        select="val_loss",
        standardize=True,
        clip_norm=0.0,
        n_jobs=None,
        random_state=None,
        verbose=False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.pool = pool
        self.activation = activation
        self.phase1_epochs = phase1_epochs
        self.phase2_epochs = phase2_epochs
        self.transition = transition
        self.learning_rate = learning_rate
        self.logit_learning_rate = logit_learning_rate
        self.tau = tau
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.select = select
        self.standardize = standardize
        self.clip_norm = clip_norm
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # Checked in `fit` by scikit-learn's own machinery (`_validate_params`), then by
    # `_check_params` for what it cannot express (bools are ints to it; the phases).
    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "pool": ["array-like"],
        "activation": [None, str],
        "phase1_epochs": [Interval(Integral, 0, None, closed="left")],
        "phase2_epochs": [Interval(Integral, 0, None, closed="left")],
        "transition": [StrOptions({"fixed", "auto"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "logit_learning_rate": [None, Interval(Real, 0, None, closed="neither")],
        "tau": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "patience": [None, Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="neither")],
        "select": [StrOptions({"val_loss", "val_accuracy"})],
        "standardize": ["boolean"],
        "clip_norm": [Interval(Real, 0, None, closed="left")],
        "n_jobs": [
            None,
            Interval(Integral, 1, None, closed="left"),
            Interval(Integral, None, -1, closed="right"),
        ],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def _check_params(self):
        """`_parameter_constraints`, and what they cannot say: a bool is no number here
        (`batch_size=True` is not 1), `hidden_layer_sizes` holds positive ints, `pool`
        names, and the two phases need a phase 2."""
        self._validate_params()

        def invalid(name, expected):
            value = getattr(self, name)
            return InvalidParameterError(
                f"The {name!r} parameter of {type(self).__name__} must be {expected}. "
                f"Got {value!r} instead."
            )

        numbers = {
            "phase1_epochs": "an int in the range [0, inf)",
            "phase2_epochs": "an int in the range [0, inf)",
            "learning_rate": "a float in the range (0, inf)",
            "logit_learning_rate": "None or a float in the range (0, inf)",
            "tau": "a float in the range (0, inf)",
            "batch_size": "'auto' or an int in the range [1, inf)",
            "patience": "None or an int in the range [1, inf)",
            "validation_fraction": "None or a float in the range (0, 1)",
            "clip_norm": "a float in the range [0, inf)",
            "n_jobs": "None or a nonzero int",
        }
        for name, expected in numbers.items():
            if isinstance(getattr(self, name), (bool, np.bool_)):
                raise invalid(name, f"{expected}, not a bool")
        sizes = np.atleast_1d(np.asarray(self.hidden_layer_sizes, dtype=object))
        if sizes.ndim != 1 or len(sizes) == 0 or not all(
            isinstance(w, Integral) and not isinstance(w, (bool, np.bool_)) and w >= 1 for w in sizes
        ):
            raise invalid("hidden_layer_sizes", "an int or a sequence of ints in the range [1, inf)")
        if len(self.pool) == 0 or not all(isinstance(a, str) for a in self.pool):
            raise invalid("pool", "a sequence of activation names (str)")
        if self.activation is None and self.phase2_epochs == 0:
            raise invalid(
                "phase2_epochs",
                "at least 1 with activation=None (phase 2 trains the mixed network the "
                "estimator keeps)",
            )
        if self.phase1_epochs + self.phase2_epochs == 0:
            raise invalid("phase2_epochs", "positive where phase1_epochs is 0")

    def _batch_size(self, rows):
        if isinstance(self.batch_size, str):
            return auto_batch_size(rows)
        return int(self.batch_size)

    def _config(self, seed, validation_fraction, rows):
        """The trainer's config for these parameters."""
        phase1 = {
            "epochs": int(self.phase1_epochs),
            "lr": float(self.learning_rate),
            "temperature": float(self.tau),
            "transition": self.transition,
        }
        if self.logit_learning_rate is not None:
            phase1["logit_lr"] = float(self.logit_learning_rate)
        model = {"hidden": [int(w) for w in np.atleast_1d(self.hidden_layer_sizes)]}
        model["pool"] = list(self.pool)
        if self.activation is not None:
            model["mode"] = "fixed"
            model["activation"] = self.activation
        training = {
            "batch_size": self._batch_size(rows),
            "clip_norm": float(self.clip_norm),
            "seed": seed,
            "select": self.select,
        }
        if self.patience is not None:
            training["patience"] = int(self.patience)
        return {
            "model": model,
            "phase1": phase1,
            "phase2": {"epochs": int(self.phase2_epochs), "lr": float(self.learning_rate)},
            "training": training,
            "data": {"validation_fraction": validation_fraction, "split_seed": seed},
        }

    def fit(self, X, y):
        """Trains on `X` `[n, features]` and labels `y` (integers or strings)."""
        # The fitted state is replaced all at once, and only once training has succeeded: a
        # fit that fails (or is interrupted) leaves the previous model, its classes and its
        # features as they were. So the data are validated on a clone (`validate_data`
        # records `n_features_in_` and `feature_names_in_` on the estimator it is given).
        self._check_params()
        probe = clone(self)
        X, y = _validate_data(probe, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y holds {len(classes)} class; expected at least 2 classes")
        if len(classes) > 256:
            raise ValueError(f"y holds {len(classes)} classes; expected at most 256")
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        standardisation = None
        if self.standardize:
            # In float64, as StandardScaler (whose mean and scale these are): a float32 copy
            # of raw rows loses a feature whose spread is small against its offset.
            scaler = StandardScaler().fit(X)
            standardisation = (scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64))
            x = _standardised(X, *standardisation)
        else:
            x = _float32(X)
        labels = np.ascontiguousarray(encoded, dtype=np.uint8)
        fraction = self.validation_fraction
        counts = np.bincount(labels, minlength=len(classes))
        validation = None
        if fraction is not None and _split_leaves_both(counts, fraction):
            # The trainer holds out round(count * fraction) of each class but keeps one
            # member of a class that would go whole; a fit refuses such a class all the
            # same, as MLPClassifier(early_stopping=True) refuses a class of one member.
            for c, count in enumerate(counts):
                if math.floor(count * fraction + 0.5) >= count:
                    raise ValueError(
                        f"validation_fraction={fraction} would hold out every sample of class "
                        f"{classes[c]!r} ({count} member{'s' if count > 1 else ''}), leaving it "
                        "none to train on; lower validation_fraction or pass None"
                    )
        if fraction is None or not _split_leaves_both(counts, fraction):
            # Asked not to hold any out (or too little data to): train on every row, and
            # pick epochs by the loss on (a sample of) the training rows.
            rows = _monitor_sample(len(labels), seed)
            validation, fraction = (x[rows], labels[rows]), 0.1
        names = getattr(probe, "feature_names_in_", None)
        features = (
            [str(n) for n in names] if names is not None else [f"x{i}" for i in range(x.shape[1])]
        )
        threads = 0 if self.n_jobs is None or self.n_jobs < 0 else int(self.n_jobs)
        callback = None
        if self.verbose:
            from . import _printer as callback
        with tempfile.TemporaryDirectory(prefix="smartmixed-fit-", dir=_scratch_dir()) as tmp:
            summary, weights = _native.fit_arrays(
                json.dumps(self._config(seed, float(fraction), len(labels))),
                os.path.join(tmp, "run"),
                x,
                labels,
                shape=[x.shape[1]],
                class_names=[str(c) for c in classes],
                feature_names=features,
                standardize=False,  # done above
                validation=validation,
                threads=threads,
                callback=callback,
                origin="SmartMixedClassifier parameters",
            )
        summary = json.loads(summary)
        weights = bytes(weights)
        lossy = None
        if standardisation is not None:
            lossy = _float32_loses(X, *standardisation)
        if standardisation is not None and not lossy.any():
            # Raw float32 rows keep what standardising them needs: the model (as the export)
            # standardises them itself, in float32, as the runtime does for every export.
            try:
                weights = _native.with_standardisation(weights, *_as_lists(*standardisation))
                standardisation = None
            except ValueError:
                pass  # not expressible in float32 (a mean beyond 1e30): kept in float64
        model = self._load(weights)
        fitted = {
            "classes_": classes,
            "n_features_in_": probe.n_features_in_,
            "summary_": summary,
            "n_iter_": sum(p["epochs"] for p in summary["phases"]),
            "_weights": weights,
            # None: the model standardises raw rows; else (mean, scale), applied in float64
            # before the model (which then has no standardisation of its own).
            "_standardisation": standardisation,
            # With a standardisation: the features float32 cannot standardise (for export).
            "_lossy": None if standardisation is None else lossy,
            "_model": model,
            "choices_": [dict(layer) for layer in model.groups],
        }
        if names is not None:
            fitted["feature_names_in_"] = names
        # One assignment: a predict in another thread sees the old state or the new one.
        state = {k: v for k, v in self.__dict__.items() if k != "feature_names_in_"}
        state.update(fitted)
        self.__dict__ = state
        return self

    def _load(self, weights):
        threads = None if self.n_jobs is None or self.n_jobs < 1 else int(self.n_jobs)
        return Model.from_bytes(weights, threads)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "_weights")

    def predict_proba(self, X):
        """Class probabilities `[n, classes]` in the order of `classes_`."""
        check_is_fitted(self)
        # float64 first, as in `fit`: scikit-learn converts any other dtype (ints, lists, an
        # int DataFrame) to the first, and float32 would lose what the float64
        # standardisation keeps (a timestamp column's spread).
        X = _validate_data(self, X, reset=False, dtype=(np.float64, np.float32), **_NO_FINITE_CHECK)
        p = self._run(self.__dict__, X, "predict_proba").astype(np.float64)
        return p / p.sum(axis=1, keepdims=True)

    @staticmethod
    def _run(state, X, method):
        """The fitted model's `method` on `X` (standardised in float64 first when the fit
        kept it so); a value beyond float32 is an error naming it."""
        standardisation = state.get("_standardisation")
        try:
            if standardisation is not None:
                X = _standardised(X, *standardisation, finite=False)
            return getattr(state["_model"], method)(X)
        except ValueError as e:
            beyond = _beyond_float32(X)
            if beyond is None and standardisation is not None:
                mean, scale = standardisation
                beyond = _beyond_float32(np.subtract(X, mean) / scale, "standardised X")
            if beyond is None:
                raise
            raise beyond from e

    def predict(self, X):
        """The class of each row's largest logit (as `smartmixed.Model.predict`, the CLI and
        the server answer: two logits an ulp apart can round to one probability)."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=(np.float64, np.float32), **_NO_FINITE_CHECK)
        state = self.__dict__  # the model and its classes from the same fit
        return state["classes_"][self._run(state, X, "predict")]

    def export(self, dir, *, force=False):
        """Writes `dir/model.safetensors` and `dir/manifest.toml`, the files
        `smartmixed-cli` and `smartmixed.Model.load` read (each written to a temporary file
        and renamed); a model already there is replaced only with `force`."""
        check_is_fitted(self)
        weights, model = self._weights, self._model
        standardisation = getattr(self, "_standardisation", None)
        if standardisation is not None:
            # This estimator standardises in float64; an export takes raw rows and
            # standardises them in float32 (the runtime's arithmetic, and the CLI's).
            try:
                weights = _native.with_standardisation(weights, *_as_lists(*standardisation))
            except ValueError as e:
                raise ValueError(
                    f"{dir}: cannot export this model: its standardisation does not fit an "
                    f"export's float32 one ({e}); shift or rescale those features before fitting"
                ) from e
            model = Model.from_bytes(weights, 1)
            lossy = np.flatnonzero(self._lossy)
            if len(lossy):
                names = model.input["feature_names"]
                mean, scale = standardisation
                which = ", ".join(
                    f"`{names[i]}` (mean {mean[i]:.7g}, std {scale[i]:.3g})" for i in lossy[:5]
                )
                warnings.warn(
                    f"{dir}: the exported model standardises raw rows in float32, which cannot "
                    f"resolve the spread of {len(lossy)} feature(s) against their offset: "
                    f"{which}; its predictions differ from this estimator's (which standardises "
                    f"in float64). Subtract the offset from such columns before fitting to "
                    f"export them faithfully.",
                    UserWarning,
                    stacklevel=2,
                )
        os.makedirs(dir, exist_ok=True)
        files = {"model.safetensors": weights, "manifest.toml": model.manifest.encode()}
        if not force:
            for name in files:
                if os.path.exists(os.path.join(dir, name)):
                    raise FileExistsError(f"{dir}: already holds {name}; pass force=True to replace it")
        for name, data in files.items():
            path = os.path.join(dir, name)
            with tempfile.NamedTemporaryFile(dir=dir, prefix=f".{name}.", delete=False) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(f.name, path)

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_model", None)  # rebuilt from _weights
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_weights" in state:
            self._model = self._load(self._weights)

    if not hasattr(BaseEstimator, "__sklearn_tags__"):  # scikit-learn < 1.6

        def _more_tags(self):
            return {"_xfail_checks": EXPECTED_FAILED_CHECKS}
