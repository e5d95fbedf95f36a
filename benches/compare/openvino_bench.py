"""OpenVINO and ONNX Runtime side of `benches/compare/run.sh precision` (issue 22's table).

Exports the network of reference.py (784-768-512-512-256-256-128-10) to ONNX twice, uniform
ReLU and mixed (each hidden layer's pre-activations sliced into reference.py's six contiguous
groups, one activation each, and concatenated: what torch.onnx.export writes for
reference.py's Contiguous model), written with the onnx package's helpers so this virtual
environment needs no torch. Runs each export on 2 threads with the latency hint in OpenVINO
f32 (INFERENCE_PRECISION_HINT f32), OpenVINO's default precision (bf16 on a CPU with AMX;
the precision it picked is printed to stderr) and ONNX Runtime f32, at batches 1, 32, 256
and 4096, each compiled for its batch (static shapes, OpenVINO's fastest case).

Prints JSON lines like ours.rs: work `infer_b{B}_t{T}_{runtime}_{net}`, runtime one of
ov_f32, ov_default, ort_f32; net relu or mixed; batch 1 in ms, else samples/s. Also the
largest logit difference of OpenVINO's default precision from its f32 at batch 256
(`maxdiff_{net}_ov_default`).
Usage: openvino_bench.py SECONDS [THREADS=2]
"""
import json
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTHS = [784, 768, 512, 512, 256, 256, 128, 10]
POOL = ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu"]
BATCHES = [1, 32, 256, 4096]


def emit(work, value, unit):
    print(json.dumps({"work": work, "value": round(value, 6), "unit": unit}), flush=True)


def groups_for(n):
    """Six contiguous groups of near-equal size covering 0..n (reference.py's)."""
    edges = [int(e) for e in np.linspace(0, n, len(POOL) + 1)]
    return list(zip(edges[:-1], edges[1:]))


def activation(op, src, dst):
    # torch's defaults: leaky_relu slope 0.01, elu alpha 1, selu ONNX's constants.
    attrs = {"alpha": 0.01} if op == "LeakyRelu" else {}
    return helper.make_node(op, [src], [dst], **attrs)


def export(path, mixed, rng):
    """The network with nn.Linear's initialisation (uniform +-1/sqrt(inputs)) as ONNX."""
    nodes, x = [], "x"
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1")] if mixed else []
    for i, (k, n) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        bound = 1.0 / np.sqrt(k)
        w = rng.uniform(-bound, bound, (n, k)).astype(np.float32)
        b = rng.uniform(-bound, bound, n).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        z = f"z{i}" if i + 2 < len(WIDTHS) else "y"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [z], transB=1))
        if i + 2 == len(WIDTHS):
            break
        if not mixed:
            nodes.append(activation("Relu", z, f"h{i}"))
        else:
            parts = []
            for g, (op, (a, e)) in enumerate(zip(POOL, groups_for(n))):
                for name, v in [("s", a), ("e", e)]:
                    inits.append(numpy_helper.from_array(np.array([v], np.int64), f"{name}{i}_{g}"))
                nodes.append(helper.make_node(
                    "Slice", [z, f"s{i}_{g}", f"e{i}_{g}", "axis1"], [f"z{i}_{g}"]))
                nodes.append(activation(op, f"z{i}_{g}", f"h{i}_{g}"))
                parts.append(f"h{i}_{g}")
            nodes.append(helper.make_node("Concat", parts, [f"h{i}"], axis=1))
        x = f"h{i}"
    graph = helper.make_graph(
        nodes, "smartmixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def best_time(fn, seconds):
    """Best of five timed slices (as reference.py), after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(5):
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < seconds / 5:
            fn()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def record(work, batch, t):
    if batch == 1:
        emit(work.replace("{b}", "1"), t * 1e3, "ms")
    else:
        emit(work.replace("{b}", str(batch)), batch / t, "samples/s")


def main():
    import onnxruntime as ort
    import openvino as ov

    seconds = float(sys.argv[1])
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    rng = np.random.default_rng(0)
    x = rng.random((max(BATCHES), 784), dtype=np.float32)
    core = ov.Core()
    with tempfile.TemporaryDirectory() as d:
        for net in ["relu", "mixed"]:
            path = f"{d}/{net}.onnx"
            export(path, net == "mixed", rng)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            for batch in BATCHES:
                xb = x[:batch]
                t = best_time(lambda: sess.run(None, {"x": xb}), seconds)
                record(f"infer_b{{b}}_t{threads}_ort_f32_{net}", batch, t)
                logits = {}
                for name, hint in [("ov_f32", {"INFERENCE_PRECISION_HINT": "f32"}),
                                   ("ov_default", {})]:
                    model = core.read_model(path)
                    model.reshape({"x": [batch, 784]})
                    config = {"PERFORMANCE_HINT": "LATENCY",
                              "INFERENCE_NUM_THREADS": threads, **hint}
                    compiled = core.compile_model(model, "CPU", config)
                    if batch == BATCHES[0]:
                        got = compiled.get_property("INFERENCE_PRECISION_HINT")
                        print(f"OpenVINO {ov.__version__} {net} {name}: {got}", file=sys.stderr)
                    req = compiled.create_infer_request()
                    t = best_time(lambda: req.infer({0: xb}, share_inputs=True), seconds)
                    record(f"infer_b{{b}}_t{threads}_{name}_{net}", batch, t)
                    logits[name] = req.infer({0: xb})[0].copy()
                if batch == 256:
                    diff = float(np.abs(logits["ov_default"] - logits["ov_f32"]).max())
                    emit(f"maxdiff_{net}_ov_default", diff, "logit")


if __name__ == "__main__":
    main()
