"""A SmartMixed export as a PyTorch module: fine-tune it in PyTorch, or go on to ONNX.

Needs torch and safetensors only. Each hidden layer applies PyTorch's own activation
functions to its contiguous groups of neurons, as the manifest lists them; the input
preprocessing the manifest records (pixels / 255, or a table's standardisation) is a
separate module, so the network itself takes preprocessed inputs as `smartmixed-infer`'s
`forward` does and `forward_raw` takes raw values.

    import smartmixed_torch
    net = smartmixed_torch.load("exported/")          # an nn.Module, eval mode
    logits = net(x)                                    # x: preprocessed [batch, inputs]
    logits = net.forward_raw(raw)                      # raw pixels or table rows
    torch.onnx.export(net, (torch.zeros(1, net.inputs),), "model.onnx", dynamo=False)

Run as a script, it checks a model against test data:
    python smartmixed_torch.py DIR inputs.f32 labels.u8
prints the accuracy of DIR's model on the raw f32 rows and u8 labels.
"""
import sys
import tomllib
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

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
    """One activation per contiguous block of neurons: `(name, start, len)` in order."""

    def __init__(self, groups):
        super().__init__()
        self.lengths = [g["len"] for g in groups]
        self.acts = nn.ModuleList(ACTIVATIONS[g["activation"]]() for g in groups)

    def forward(self, x):
        parts = torch.split(x, self.lengths, dim=1)
        return torch.cat([act(p) for act, p in zip(self.acts, parts)], dim=1)


class Preprocess(nn.Module):
    """`(raw / divisor - mean) / std` per feature, from the manifest's input table."""

    def __init__(self, inputs, table):
        super().__init__()
        table = table or {"divisor": 255.0}  # version-1 manifests: 8-bit pixels
        self.divisor = float(table["divisor"])
        mean = table.get("mean") or [0.0] * inputs
        std = table.get("std") or [1.0] * inputs
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, raw):
        return (raw / self.divisor - self.mean) / self.std


class SmartMixedNet(nn.Module):
    """The exported network: Linear layers, grouped activations between them."""

    def __init__(self, manifest, tensors):
        super().__init__()
        assert manifest["format"] == "smartmixed-manifest" and manifest["version"] in (1, 2)
        self.inputs = manifest["inputs"]
        self.class_names = manifest.get("class_names") or [
            str(c) for c in range(manifest["layers"][-1]["outputs"])
        ]
        self.preprocess = Preprocess(self.inputs, manifest.get("input"))
        layers = []
        for i, layer in enumerate(manifest["layers"]):
            linear = nn.Linear(layer["inputs"], layer["outputs"])
            with torch.no_grad():
                linear.weight.copy_(tensors[f"layers.{i}.weight"])
                linear.bias.copy_(tensors[f"layers.{i}.bias"])
            layers.append(linear)
            if layer.get("groups"):
                layers.append(GroupedActivation(layer["groups"]))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)

    def forward_raw(self, raw):
        return self.forward(self.preprocess(raw))


def load(directory):
    """The model in `directory` (model.safetensors + manifest.toml), in eval mode."""
    d = Path(directory)
    manifest = tomllib.loads((d / "manifest.toml").read_text())
    net = SmartMixedNet(manifest, load_file(str(d / "model.safetensors")))
    return net.eval()


def main(directory, inputs, labels):
    net = load(directory)
    raw = torch.frombuffer(bytearray(Path(inputs).read_bytes()), dtype=torch.float32)
    y = torch.frombuffer(bytearray(Path(labels).read_bytes()), dtype=torch.uint8).long()
    with torch.no_grad():
        pred = net.forward_raw(raw.reshape(len(y), net.inputs)).argmax(dim=1)
    correct = int((pred == y).sum())
    print(f"accuracy: {100.0 * correct / len(y):.2f}% ({correct}/{len(y)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
