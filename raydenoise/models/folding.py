"""The inference form of a network: the same function in fewer graph operations, for export.

A trained ``swift`` block (``architectures._NAFBlock``) computes
``LayerNorm(affine) -> 1x1 conv -> depthwise 3x3 -> split channels, multiply -> 1x1 conv * beta``
and the same for its feed-forward half. At inference the per-channel factors are constants, so

- the LayerNorm's weight and bias fold into the 1x1 conv that follows it,
- ``beta`` and ``gamma`` fold into the 1x1 conv that precedes them (the residual add then
  directly follows a conv, which ONNX Runtime fuses into the conv),
- the channel split of SimpleGate becomes two convs of half the width (no Slice of a
  full-resolution tensor, no copy).

Exported to ONNX and run by ONNX Runtime on one CPU thread this is 1.14x faster than the
trained form (BENCHMARKS.md); the output is the same function up to float32 rounding
(``export_onnx`` checks the graph against the trained network before it is written). Pure torch:
no Ray here.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .architectures import LayerNorm2d, _NAFBlock


def inference_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose ``swift`` blocks are folded as the module doc
    says; a network without such blocks comes back as an unchanged copy."""
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, _NAFBlock):
                setattr(module, name, _FoldedBlock(child))
    return folded


def _with(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    conv.weight.data = weight.detach().clone()
    conv.bias = nn.Parameter(bias.detach().clone())
    return conv


def _conv1x1(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    return _with(nn.Conv2d(weight.shape[1], weight.shape[0], 1), weight[:, :, None, None], bias)


def _depthwise(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    ch = weight.shape[0]
    return _with(nn.Conv2d(ch, ch, 3, padding=1, groups=ch), weight, bias)


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias if conv.bias is not None else torch.zeros(conv.weight.shape[0])


def _after_norm(norm: LayerNorm2d, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1x1 ``conv``'s weight and bias with ``norm``'s affine folded in: conv(w * n + b) =
    (W diag(w)) n + (W b + bias)."""
    w = conv.weight[:, :, 0, 0]
    return w * norm.weight[None, :], w @ norm.bias + _bias(conv)


def _before_scale(conv: nn.Conv2d, scale: torch.Tensor) -> nn.Conv2d:
    """The 1x1 ``conv`` followed by a per-channel ``scale`` (1, C, 1, 1), as one conv."""
    s = scale.flatten()
    return _conv1x1(conv.weight[:, :, 0, 0] * s[:, None], _bias(conv) * s)


class _FoldedBlock(nn.Module):
    """``_NAFBlock`` with its constants folded (see the module doc); the same function."""

    def __init__(self, block: _NAFBlock):
        super().__init__()
        ch = block.beta.shape[1]
        self.norm = LayerNorm2d(ch, block.norm1.eps)  # its affine stays the identity: folded below
        expand_w, expand_b = _after_norm(block.norm1, block.expand)
        ffn_w, ffn_b = _after_norm(block.norm2, block.ffn_in)
        dw_w, dw_b = block.depthwise.weight, _bias(block.depthwise)
        self.expand_a, self.expand_b = (
            _conv1x1(expand_w[:ch], expand_b[:ch]),
            _conv1x1(expand_w[ch:], expand_b[ch:]),
        )
        self.depthwise_a, self.depthwise_b = (
            _depthwise(dw_w[:ch], dw_b[:ch]),
            _depthwise(dw_w[ch:], dw_b[ch:]),
        )
        self.ffn_a, self.ffn_b = _conv1x1(ffn_w[:ch], ffn_b[:ch]), _conv1x1(ffn_w[ch:], ffn_b[ch:])
        self.project = _before_scale(block.project, block.beta)
        self.ffn_out = _before_scale(block.ffn_out, block.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        x = x + self.project(
            self.depthwise_a(self.expand_a(n)) * self.depthwise_b(self.expand_b(n))
        )
        n = self.norm(x)
        return x + self.ffn_out(self.ffn_a(n) * self.ffn_b(n))
