#!/usr/bin/env python3
"""An independent reader of SmartMixed's exported format: numpy + safetensors only.

Usage: independent_reader.py DIR
DIR holds model.safetensors, manifest.toml, inputs.f32 ([n, inputs] little-endian f32) and
logits.f32 (the Rust runtime's output). Recomputes the forward pass from the files and the
manifest alone and exits non-zero unless every logit agrees within 1e-5.
"""
import sys
import tomllib
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
GELU_K = np.sqrt(2.0 / np.pi)


def softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


# PyTorch's definitions, computed in float64.
ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "mish": lambda x: x * np.tanh(softplus(x)),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(GELU_K * (x + 0.044715 * x**3))),
}


def main(d: Path) -> int:
    manifest = tomllib.loads((d / "manifest.toml").read_text())
    assert manifest["format"] == "smartmixed-manifest" and manifest["version"] in (1, 2)
    # Version 2 describes the input; the product of its shape is the input width.
    if "input" in manifest:
        assert int(np.prod(manifest["input"]["shape"])) == manifest["inputs"], manifest["input"]
    tensors = load_file(str(d / "model.safetensors"))
    x = np.fromfile(d / "inputs.f32", dtype="<f4").astype(np.float64)
    x = x.reshape(-1, manifest["inputs"])
    for i, layer in enumerate(manifest["layers"]):
        w = tensors[f"layers.{i}.weight"].astype(np.float64)
        b = tensors[f"layers.{i}.bias"].astype(np.float64)
        assert w.shape == (layer["outputs"], layer["inputs"]), w.shape
        z = x @ w.T + b
        groups = layer.get("groups", [])
        if groups:
            y = np.empty_like(z)
            for g in groups:
                s = slice(g["start"], g["start"] + g["len"])
                y[:, s] = ACTIVATIONS[g["activation"]](z[:, s])
            z = y
            # Phase-1 exports clamp every hidden output (the manifest's hidden_clamp).
            if "hidden_clamp" in manifest:
                c = manifest["hidden_clamp"]
                z = np.clip(z, -c, c)
        x = z
    want = np.fromfile(d / "logits.f32", dtype="<f4").reshape(x.shape)
    diff = float(np.max(np.abs(x - want)))
    same = int(np.sum(np.argmax(x, axis=1) == np.argmax(want, axis=1)))
    verdict = "agree" if diff <= 1e-5 and same == len(x) else "DISAGREE"
    print(f"{verdict}: max |python - rust| = {diff:.3e} over {x.size} logits, {same}/{len(x)} same predictions")
    return 0 if verdict == "agree" else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
