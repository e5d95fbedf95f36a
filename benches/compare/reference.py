"""PyTorch and ONNX Runtime side of benches/compare/run.sh.

The same network as the Rust side (784-768-512-512-256-256-128-10), written from the paper:
- phase 1: per-neuron logits over the pool, one Gumbel draw per neuron per forward shared by
  the batch, hard straight-through Gumbel-Softmax (tau 0.3), every candidate evaluated and
  clamped to +-10, mixture clamped (the authors' code);
- phase 2 "contiguous": neurons grouped by activation into contiguous column blocks;
- phase 2 "gather/scatter": groups at arbitrary neuron indices (index_select, then scatter);
- fixed ReLU.
Adam (lr 1e-4), global-norm clipping 1.0, cross-entropy, batch 128. Inference: the
contiguous phase-2 model in PyTorch (no_grad) and exported to ONNX for ONNX Runtime.

Prints JSON lines {"work": ..., "value": ..., "unit": ...}, like the Rust side.
Usage: reference.py train STEPS THREADS | reference.py infer SECONDS
"""
import json
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = [784, 768, 512, 512, 256, 256, 128, 10]
POOL = [torch.relu, torch.sigmoid, torch.tanh, F.leaky_relu, F.elu, F.selu]
BATCH = 128


def emit(work, value, unit):
    print(json.dumps({"work": work, "value": round(value, 4), "unit": unit}), flush=True)


class Selective(nn.Module):
    def __init__(self, tau=0.3):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(WIDTHS, WIDTHS[1:]))
        self.logits = nn.ParameterList(
            nn.Parameter(torch.randn(len(POOL), n) * 2.0) for n in WIDTHS[1:-1])
        self.tau = tau

    def forward(self, x):
        for layer, alpha in zip(self.layers[:-1], self.logits):
            z = layer(x)
            u = torch.rand_like(alpha)
            g = -torch.log(-torch.log(u + 1e-20) + 1e-20)
            soft = torch.softmax((alpha + g) / self.tau, dim=0)
            hard = F.one_hot(soft.argmax(0), len(POOL)).T.to(soft.dtype)
            h = hard - soft.detach() + soft  # straight-through
            cands = torch.stack([torch.clamp(f(z), -10, 10) for f in POOL])  # [pool, b, n]
            x = torch.clamp((cands * h[:, None, :]).sum(0), -10, 10)
        return self.layers[-1](x)


def groups_for(n):
    """Six contiguous groups of near-equal size covering 0..n."""
    edges = [int(e) for e in np.linspace(0, n, len(POOL) + 1)]
    return list(zip(edges[:-1], edges[1:]))


class Contiguous(nn.Module):
    def __init__(self, acts=None):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(WIDTHS, WIDTHS[1:]))
        self.acts = acts

    def forward(self, x):
        for layer, n in zip(self.layers[:-1], WIDTHS[1:-1]):
            z = layer(x)
            if self.acts is not None:
                x = self.acts(z)
            else:
                x = torch.cat([f(z[:, a:b]) for f, (a, b) in zip(POOL, groups_for(n))], dim=1)
        return self.layers[-1](x)


class GatherScatter(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(WIDTHS, WIDTHS[1:]))
        g = torch.Generator().manual_seed(0)
        self.index = [torch.randperm(n, generator=g) for n in WIDTHS[1:-1]]

    def forward(self, x):
        for layer, perm, n in zip(self.layers[:-1], self.index, WIDTHS[1:-1]):
            z = layer(x)
            out = torch.empty_like(z)
            for f, (a, b) in zip(POOL, groups_for(n)):
                idx = perm[a:b]
                out.index_copy_(1, idx, f(z.index_select(1, idx)))
            x = out
        return self.layers[-1](x)


def train(steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.rand(BATCH, 784)
    y = torch.randint(0, 10, (BATCH,))
    for work, model in [("train_phase1", Selective()),
                        ("train_phase2_contiguous", Contiguous()),
                        ("train_phase2_gather", GatherScatter()),
                        ("train_relu", Contiguous(torch.relu))]:
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def run(n):
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
        run(5)
        start = time.perf_counter()
        run(steps)
        emit(work, steps * BATCH / (time.perf_counter() - start), "samples/s")


def best_time(fn, seconds):
    best = float("inf")
    for _ in range(5):
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < seconds / 5:
            fn()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def infer(seconds):
    import onnxruntime as ort
    torch.manual_seed(0)
    model = Contiguous().eval()
    x = torch.rand(256, 784)
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/model.onnx"
        torch.onnx.export(model, x[:1], path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
        for threads in [1, 2]:
            torch.set_num_threads(threads)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            for batch in [1, 32, 256]:
                xb = x[:batch].numpy()
                t_ort = best_time(lambda: sess.run(None, {"x": xb}), seconds)
                with torch.no_grad():
                    t_torch = best_time(lambda: model(x[:batch]), seconds)
                for name, t in [("ort", t_ort), ("torch", t_torch)]:
                    if batch == 1:
                        emit(f"infer_b1_t{threads}_{name}", t * 1e3, "ms")
                    else:
                        emit(f"infer_b{batch}_t{threads}_{name}", batch / t, "samples/s")


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(int(sys.argv[2]), int(sys.argv[3]))
    else:
        infer(float(sys.argv[2]))
