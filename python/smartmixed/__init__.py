"""SmartMixed from Python: the Rust runtime (`Model`), the Rust trainer (`train`), a
scikit-learn estimator (`smartmixed.sklearn.SmartMixedClassifier`) and the PyTorch bridge
(`smartmixed.torch`, which alone imports torch).

    import smartmixed
    model = smartmixed.Model.load("exported/")        # model.safetensors + manifest.toml
    labels = model.predict(x)                         # raw rows, the manifest's preprocessing
    summary = smartmixed.train("configs/wine.toml", out="runs/wine", phase1__epochs=5)
"""
import json
import os
from collections.abc import Mapping

from . import _native
from ._native import Model, __version__

__all__ = ["Model", "train", "export", "__version__"]


def _overrides(overrides):
    """`section__field=value` (or `section={...}`) keyword arguments as nested sections."""
    nested = {}
    for key, value in overrides.items():
        *sections, field = key.split("__")
        target = nested
        for s in sections:
            target = target.setdefault(s, {})
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        target[field] = dict(value) if isinstance(value, Mapping) else value
    return nested


def _printer(record):
    """The default progress: one line per epoch on stderr."""
    import sys

    print(
        f"{record['phase']} epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
        f"validation loss {record['validation_loss']:.4f}, "
        f"accuracy {100 * record['validation_accuracy']:.2f}% ({record['seconds']:.1f} s)",
        file=sys.stderr,
    )


def train(config, out, *, threads=0, callback=None, verbose=True, **overrides):
    """Trains a config with the Rust trainer into the new run directory `out`, as
    `smartmixed-cli train --config CONFIG --out OUT` does; returns the run's summary
    (`summary.json`) as a dict.

    `config` is a TOML file's path or a dict of the same sections; a file's relative
    `[data]` paths are read from its folder (as the CLI reads them), a dict's and the
    overrides' from the working directory. Keyword arguments override fields: `phase1__epochs=5`, `data__dir="data/mnist"`, or whole sections
    (`training={"seed": 3}`). `callback(record)` gets each epoch's metrics as a dict (by
    default, with `verbose`, a line per epoch is printed). Ctrl-C stops the run after its
    current batch and raises `KeyboardInterrupt`; the run directory keeps every completed
    epoch (`smartmixed-cli train --resume OUT` continues it). `threads=0` uses every core.
    """
    if callback is None and verbose:
        callback = _printer
    kwargs = dict(threads=threads, callback=callback)
    if overrides:
        kwargs["overrides_json"] = json.dumps(_overrides(overrides))
    if isinstance(config, Mapping):
        kwargs["config_json"] = json.dumps(_plain(config))
    else:
        kwargs["path"] = os.fsdecode(config)
    return json.loads(_native.train_config(os.fsdecode(out), **kwargs))


def _plain(config):
    """A config dict with paths made strings, ready for JSON."""
    if isinstance(config, Mapping):
        return {k: _plain(v) for k, v in config.items()}
    if isinstance(config, os.PathLike):
        return os.fspath(config)
    return config


def export(run, out, *, force=False):
    """Exports a run's best checkpoint to `out` (`model.safetensors` + `manifest.toml`), as
    `smartmixed-cli export --run RUN --safetensors OUT` does; replaces a model there only
    with `force`."""
    _native.export_run(os.fsdecode(run), os.fsdecode(out), force)
