"""`smartmixed.torch`: an export as a PyTorch `nn.Module` (fine-tune it in PyTorch, or go on
to ONNX). The bridge itself is `python/smartmixed_torch.py`, shipped in the wheel as the
module `smartmixed_torch`; importing this module imports torch, `import smartmixed` does not.

    import smartmixed.torch
    net = smartmixed.torch.load("exported/")      # an nn.Module, eval mode
"""
from smartmixed_torch import *  # noqa: F401,F403
from smartmixed_torch import ACTIVATIONS, GroupedActivation, Preprocess, SmartMixedNet, load  # noqa: F401
