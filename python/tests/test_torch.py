"""`smartmixed.torch`: importing the package never imports torch; with torch installed,
the bridge's module gives the runtime's logits."""
import subprocess
import sys

import numpy as np
import pytest


def test_import_smartmixed_does_not_import_torch():
    code = "import sys, smartmixed, smartmixed.sklearn; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_bridge_matches_the_runtime(wine_model, wine):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    import smartmixed
    import smartmixed.torch

    X, _, _ = wine
    net = smartmixed.torch.load(wine_model)
    with torch.no_grad():
        got = net.forward_raw(torch.tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, smartmixed.Model.load(wine_model).logits(X), rtol=1e-4, atol=1e-4)
