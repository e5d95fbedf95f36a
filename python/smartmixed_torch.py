"""A SmartMixed export as a PyTorch module: fine-tune it in PyTorch, write it back to the
export format, or go on to ONNX.

Needs torch and safetensors only. Each hidden layer applies PyTorch's own activation
functions to its contiguous groups of neurons, as the manifest lists them; the input
preprocessing the manifest records (pixels / 255, or a table's standardisation) is a
separate module, so the network itself takes preprocessed inputs as `smartmixed-infer`'s
`forward` does and `forward_raw` takes raw values.

The module's state_dict holds exactly the export's tensors under their own names
(`layers.{i}.weight`, `layers.{i}.bias`), so the export's file loads into it directly,
and `to_export` writes a (fine-tuned) module back as a directory `smartmixed-infer` and
`smartmixed-cli` load:

    import smartmixed_torch
    from safetensors.torch import load_file
    net = smartmixed_torch.load("exported/")          # an nn.Module, eval mode
    logits = net(x)                                    # x: preprocessed [batch, inputs]
    logits = net.forward_raw(raw)                      # raw pixels or table rows
    net.load_state_dict(load_file("exported/model.safetensors"))
    net.to_export("fine-tuned/")                       # model.safetensors + manifest.toml
    torch.onnx.export(net, (torch.zeros(1, net.inputs),), "model.onnx", dynamo=False)

Run as a script, it checks a model against test data (see --help).
"""
import argparse
import os
import sys
import tomllib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

# The export's file names and the metadata key holding the manifest's copy
# (smartmixed-core's manifest.rs).
MODEL_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.toml"
MANIFEST_METADATA_KEY = "smartmixed.manifest"

# PyTorch's modules for the names SmartMixed registers.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}


class GroupedActivation(nn.Module):
    """One activation per contiguous block of neurons: `(name, start, len)` in order,
    then, for a phase-1 export (the manifest's `hidden_clamp`), every output clamped to
    `[-clamp, clamp]` as phase 1 evaluated it."""

    def __init__(self, groups, clamp=None):
        super().__init__()
        self.lengths = [g["len"] for g in groups]
        self.acts = nn.ModuleList(ACTIVATIONS[g["activation"]]() for g in groups)
        self.clamp = None if clamp is None else float(clamp)

    def forward(self, x):
        parts = torch.split(x, self.lengths, dim=1)
        y = torch.cat([act(p) for act, p in zip(self.acts, parts)], dim=1)
        return y if self.clamp is None else torch.clamp(y, -self.clamp, self.clamp)


class Preprocess(nn.Module):
    """`(raw / divisor - mean) / std` per feature, from the manifest's input table.

    Its tensors are buffers left out of the state_dict: they are the manifest's, not
    weights, and `to_export` writes the manifest as it was."""

    def __init__(self, inputs, table):
        super().__init__()
        table = table or {"divisor": 255.0}  # version-1 manifests: 8-bit pixels
        self.divisor = float(table["divisor"])
        mean = table.get("mean") or [0.0] * inputs
        std = table.get("std") or [1.0] * inputs
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, raw):
        return (raw / self.divisor - self.mean) / self.std


class SmartMixedNet(nn.Module):
    """The exported network: `layers[i]` is the export's layer `i` (`nn.Linear`), and
    `activations[i]` the grouped activation after it (identity after the last)."""

    def __init__(self, manifest, tensors, manifest_text=None):
        super().__init__()
        if manifest.get("format") != "smartmixed-manifest" or manifest.get("version") not in (1, 2):
            raise ValueError("not a SmartMixed manifest of version 1 or 2")
        self.manifest_text = manifest_text
        self.inputs = manifest["inputs"]
        self.class_names = manifest.get("class_names") or [
            str(c) for c in range(manifest["layers"][-1]["outputs"])
        ]
        self.preprocess = Preprocess(self.inputs, manifest.get("input"))
        self.layers = nn.ModuleList(
            nn.Linear(layer["inputs"], layer["outputs"]) for layer in manifest["layers"]
        )
        clamp = manifest.get("hidden_clamp")
        self.activations = nn.ModuleList(
            GroupedActivation(layer["groups"], clamp) if layer.get("groups") else nn.Identity()
            for layer in manifest["layers"]
        )
        self.load_state_dict(tensors)

    def forward(self, x):
        for linear, act in zip(self.layers, self.activations):
            x = act(linear(x))
        return x

    def forward_raw(self, raw):
        return self.forward(self.preprocess(raw))

    def to_export(self, directory, force=False):
        """Writes the module as `directory/model.safetensors` and `manifest.toml` (the
        manifest it was loaded with: fine-tuning changes weights, not the architecture).
        Refuses to replace a model already there unless `force`; each file is written to
        a temporary name first, then renamed."""
        if self.manifest_text is None:
            raise ValueError("no manifest to write: build the module with smartmixed_torch.load")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if not force and ((d / MODEL_FILE).exists() or (d / MANIFEST_FILE).exists()):
            raise FileExistsError(f"{d}: already holds a model (force=True replaces it)")
        tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in self.state_dict().items()}
        for name, t in tensors.items():
            if not torch.isfinite(t).all():
                raise ValueError(f"{name}: non-finite values cannot be exported")
        _write_atomic(d / MODEL_FILE, lambda p: save_file(tensors, str(p), metadata={MANIFEST_METADATA_KEY: self.manifest_text}))
        _write_atomic(d / MANIFEST_FILE, lambda p: p.write_text(self.manifest_text))


def _write_atomic(path, write):
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(directory):
    """The model in `directory` (model.safetensors + manifest.toml), in eval mode."""
    d = Path(directory)
    text = (d / MANIFEST_FILE).read_text()
    net = SmartMixedNet(tomllib.loads(text), load_file(str(d / MODEL_FILE)), text)
    return net.eval()


def accuracy(directory, inputs, labels):
    net = load(directory)
    raw = torch.frombuffer(bytearray(Path(inputs).read_bytes()), dtype=torch.float32)
    y = torch.frombuffer(bytearray(Path(labels).read_bytes()), dtype=torch.uint8).long()
    with torch.no_grad():
        pred = net.forward_raw(raw.reshape(len(y), net.inputs)).argmax(dim=1)
    correct = int((pred == y).sum())
    print(f"accuracy: {100.0 * correct / len(y):.2f}% ({correct}/{len(y)})")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Checks a SmartMixed export with PyTorch: prints the accuracy of the "
        "model in DIR on raw f32 rows and u8 labels."
    )
    parser.add_argument("dir", help="an export directory (model.safetensors + manifest.toml)")
    parser.add_argument("inputs", help="raw inputs: [n, inputs] little-endian f32")
    parser.add_argument("labels", help="labels: n bytes, class indices")
    args = parser.parse_args(argv)
    return accuracy(args.dir, args.inputs, args.labels)


if __name__ == "__main__":
    sys.exit(main())
