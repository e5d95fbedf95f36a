"""`smartmixed.train`: configs as files or dicts, overrides, errors, Ctrl-C."""
import os
import signal
import threading
import time

import pytest

import smartmixed
from conftest import tiny_config


def test_a_dict_config_trains_and_returns_the_summary(tmp_path, wine_csv):
    epochs = []
    summary = smartmixed.train(tiny_config(wine_csv), out=tmp_path / "run", callback=epochs.append)
    assert [p["phase"] for p in summary["phases"]] == ["phase1", "phase2"]
    assert summary["architecture"] == [13, 16, 8, 3]
    assert [(e["phase"], e["epoch"]) for e in epochs] == [
        (ph, e) for ph in ("phase1", "phase2") for e in (1, 2, 3)
    ]
    assert (tmp_path / "run" / "summary.json").is_file()
    assert summary["phases"][-1]["test_accuracy"] > 0.5


def test_a_toml_file_with_overrides(tmp_path, wine_csv):
    cfg = tmp_path / "wine.toml"
    cfg.write_text(
        f'[model]\nhidden = [8]\n[phase1]\nepochs = 5\nlr = 1e-2\n[phase2]\nepochs = 1\n'
        f'[data]\nfile = "{wine_csv}"\nlabel = "label"\n'
    )
    summary = smartmixed.train(cfg, out=tmp_path / "run", verbose=False, phase1__epochs=2, training={"seed": 5})
    assert [p["epochs"] for p in summary["phases"]] == [2, 1]
    assert summary["seed"] == 5


def test_a_toml_files_relative_data_paths_are_read_from_its_folder(tmp_path, wine_csv, monkeypatch):
    """As `smartmixed-cli train --config` reads them: `file = "../tables/wine.csv"` in
    `configs/wine.toml` names the table beside `configs/`, whatever the working directory,
    and the run records it absolute."""
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "wine.csv").write_bytes(wine_csv.read_bytes())
    (tmp_path / "configs").mkdir()
    cfg = tmp_path / "configs" / "wine.toml"
    cfg.write_text('[model]\nhidden = [8]\n[phase1]\nepochs = 1\n[phase2]\nepochs = 1\n[data]\nfile = "../tables/wine.csv"\nlabel = "label"\n')
    elsewhere = tmp_path / "x" / "y"  # where ../tables does not exist
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    smartmixed.train(cfg, out=tmp_path / "run", verbose=False)
    recorded = (tmp_path / "run" / "config.toml").read_text()
    table = tmp_path / "tables" / "wine.csv"  # recorded without the `configs/..`
    assert f'file = "{table}"' in recorded, recorded


def test_errors_name_the_field(tmp_path, wine_csv):
    bad = tiny_config(wine_csv)
    bad["phase1"]["lr"] = -1.0
    with pytest.raises(ValueError, match="phase1.lr"):
        smartmixed.train(bad, out=tmp_path / "a")
    bad = tiny_config(wine_csv)
    bad["model"]["hiden"] = [3]
    with pytest.raises(ValueError, match="unknown field `hiden`"):
        smartmixed.train(bad, out=tmp_path / "b")
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[model\n")
    with pytest.raises(ValueError, match=r"broken.toml: line 1"):
        smartmixed.train(cfg, out=tmp_path / "c", phase1__epochs=1)
    with pytest.raises(OSError, match="no_such.csv: cannot read table"):
        smartmixed.train(tiny_config(tmp_path / "no_such.csv"), out=tmp_path / "d")


def test_ctrl_c_stops_the_run_and_keeps_it(tmp_path, wine_csv):
    """SIGINT from another thread while the trainer runs (no callback: only the calling
    thread's signal checks can see it) raises KeyboardInterrupt within a moment; the run
    directory keeps the completed epochs and no summary."""
    cfg = tiny_config(wine_csv)
    cfg["phase1"]["epochs"] = 5000
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        smartmixed.train(cfg, out=tmp_path / "run", verbose=False)
    assert time.perf_counter() - t < 0.5 + 5
    timer.join()
    run = tmp_path / "run"
    assert (run / "state.safetensors").is_file()
    assert not (run / "summary.json").exists()
    epochs = len((run / "metrics.csv").read_text().splitlines()) - 1
    assert 1 <= epochs < 5000


def test_an_exception_in_the_callback_stops_the_run_and_propagates(tmp_path, wine_csv):
    cfg = tiny_config(wine_csv)
    cfg["phase1"]["epochs"] = 5000

    def fail(record):
        if record["epoch"] == 2:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        smartmixed.train(cfg, out=tmp_path / "run", callback=fail)
    epochs = len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) - 1
    assert 2 <= epochs < 10


def test_export_of_a_directory_without_a_run_names_the_checkpoint(tmp_path):
    with pytest.raises(OSError, match="no phase2-best.safetensors or fixed-best.safetensors in this run directory"):
        smartmixed.export(tmp_path, tmp_path / "model")


def test_exporting_a_run_without_phase_2_names_what_is_missing(tmp_path, wine_csv):
    """A run of phase2.epochs = 0 ends after phase 1: export says there is no phase 2 or
    fixed checkpoint (it said it could not read phase2-best.safetensors)."""
    cfg = tiny_config(wine_csv)
    cfg["phase2"]["epochs"] = 0
    smartmixed.train(cfg, out=tmp_path / "run", verbose=False)
    with pytest.raises(OSError, match=r"no phase2-best.safetensors or fixed-best.safetensors in this run directory .*phase2.epochs = 0"):
        smartmixed.export(tmp_path / "run", tmp_path / "model")


def test_refusals_name_the_python_parameters_not_cli_flags(tmp_path, wine_csv, wine_model):
    """Exporting over a model and training into a finished run are refused in the words of
    the Python functions (`force=True`, `out`), not the CLI's (`--force`, `--out`)."""
    with pytest.raises(ValueError, match="pass force=True to replace the model there") as e:
        smartmixed.export(wine_model.parent / "run", wine_model)
    assert "--force" not in str(e.value)
    with pytest.raises(ValueError, match="choose another `out`") as e:
        smartmixed.train(tiny_config(wine_csv), out=wine_model.parent / "run", verbose=False)
    assert "--out" not in str(e.value)
    # bytes paths, as os functions take them
    smartmixed.export(os.fsencode(wine_model.parent / "run"), os.fsencode(tmp_path / "copy"))
    assert (tmp_path / "copy" / "model.safetensors").is_file()
