"""`SmartMixedClassifier`: a scikit-learn classifier trained by the Rust SmartMixed trainer
(phase 1 picks each hidden neuron's activation, phase 2 trains the frozen mix) and run by
the Rust runtime. Its fitted state is the exported model's safetensors bytes, so it
pickles, and `export(dir)` writes the files `smartmixed-cli` and `smartmixed.Model` load.

    from smartmixed.sklearn import SmartMixedClassifier
    clf = SmartMixedClassifier(hidden_layer_sizes=(32, 16), random_state=0).fit(X, y)
    clf.predict(X_test); clf.choices_        # per hidden layer, neurons per activation
"""
import json
import math
import os
import tempfile

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
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


def _split_leaves_both(counts, fraction):
    """Whether the trainer's stratified split (per class, `round(count * fraction)` items to
    validation, rounding half away from zero) leaves items on both sides."""
    val = sum(math.floor(c * fraction + 0.5) for c in counts)
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
        Standardise features with the training data's mean and standard deviation (recorded
        in the exported model, which applies it to raw inputs).
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

    def _batch_size(self, rows):
        if isinstance(self.batch_size, str):
            if self.batch_size != "auto":
                raise ValueError(f"batch_size = {self.batch_size!r}, expected an integer or 'auto'")
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
        probe = clone(self)
        X, y = _validate_data(probe, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y holds {len(classes)} class; expected at least 2 classes")
        if len(classes) > 256:
            raise ValueError(f"y holds {len(classes)} classes; expected at most 256")
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        x = np.ascontiguousarray(X, dtype=np.float32)
        labels = np.ascontiguousarray(encoded, dtype=np.uint8)
        fraction = self.validation_fraction
        counts = np.bincount(labels, minlength=len(classes))
        validation = None
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
                standardize=bool(self.standardize),
                validation=validation,
                threads=threads,
                callback=callback,
                origin="SmartMixedClassifier parameters",
            )
        summary = json.loads(summary)
        weights = bytes(weights)
        model = self._load(weights)
        fitted = {
            "classes_": classes,
            "n_features_in_": probe.n_features_in_,
            "summary_": summary,
            "n_iter_": sum(p["epochs"] for p in summary["phases"]),
            "_weights": weights,
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
        X = _validate_data(self, X, reset=False, dtype=(np.float32, np.float64), **_NO_FINITE_CHECK)
        return self._proba(self.__dict__, X)

    @staticmethod
    def _proba(state, X):
        p = state["_model"].predict_proba(X).astype(np.float64)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The most probable class of each row."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=(np.float32, np.float64), **_NO_FINITE_CHECK)
        state = self.__dict__  # the model and its classes from the same fit
        return state["classes_"][np.argmax(self._proba(state, X), axis=1)]

    def export(self, dir, *, force=False):
        """Writes `dir/model.safetensors` and `dir/manifest.toml`, the files
        `smartmixed-cli` and `smartmixed.Model.load` read (each written to a temporary file
        and renamed); a model already there is replaced only with `force`."""
        check_is_fitted(self)
        os.makedirs(dir, exist_ok=True)
        files = {"model.safetensors": self._weights, "manifest.toml": self._model.manifest.encode()}
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
