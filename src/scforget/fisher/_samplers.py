"""Closed forms of per-cell squared gradients for common layers (the shape of Opacus' grad samplers).

A sampler turns a layer's input ``a`` (cells x features) and the gradient ``g`` of the summed loss
at its output into ``Σ_n (∂ℓ_n/∂θ)²`` for each of its parameters, without forming per-cell
gradients: cells do not interact inside these layers, so cell ``n``'s gradient is a function of
``a_n`` and ``g_n`` alone. Opacus' registry serves the same purpose for DP-SGD; its samplers return
every per-sample gradient (memory ``cells x parameters``), which the Fisher does not need, so these
return the sums directly. Add a layer type with :func:`register_sampler`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

#: ``sampler(layer, inputs, output_grad, with_sum) -> {param: (sum of squares, sum or None)}``.
Sampler = Callable[[nn.Module, torch.Tensor, torch.Tensor, bool], dict[str, tuple[torch.Tensor, torch.Tensor | None]]]
Supports = Callable[[nn.Module, torch.Tensor, torch.Tensor], bool]


@dataclass(frozen=True)
class SamplerEntry:
    """A registered sampler and the check of the inputs it handles."""

    sampler: Sampler
    supports: Supports


_SAMPLERS: dict[type[nn.Module], SamplerEntry] = {}


def register_sampler(*layer_types: type[nn.Module], supports: Supports | None = None) -> Callable[[Sampler], Sampler]:
    """Register ``sampler`` for ``layer_types`` (exact types; subclasses fall back to their closest parent)."""

    def decorate(sampler: Sampler) -> Sampler:
        entry = SamplerEntry(sampler, supports or (lambda layer, a, out: True))
        for t in layer_types:
            _SAMPLERS[t] = entry
        return sampler

    return decorate


def sampler_for(layer: nn.Module) -> SamplerEntry | None:
    """The sampler of ``layer``'s type (or of its nearest registered parent type), if any."""
    for klass in type(layer).__mro__:
        if klass in _SAMPLERS:
            return _SAMPLERS[klass]
    return None


@register_sampler(nn.Linear, supports=lambda layer, a, out: a.dim() == 2 and out.dim() == 2)
def _linear(layer: nn.Linear, a: torch.Tensor, g: torch.Tensor, with_sum: bool):
    # y = W a + b, so cell n's gradient is g_n a_nᵀ and Σ_n (g_n a_nᵀ)² = (g²)ᵀ (a²): one matrix product
    g2 = g.square()
    out = {"weight": (g2.t() @ a.square(), g.t() @ a if with_sum else None)}
    if layer.bias is not None:
        out["bias"] = (g2.sum(0), g.sum(0) if with_sum else None)
    return out


def _embedding_supported(layer: nn.Embedding, a: torch.Tensor, out: torch.Tensor) -> bool:
    idx = a.reshape(-1) if a.dim() == 2 and a.shape[1] == 1 else a
    return idx.dim() == 1 and layer.max_norm is None and out.shape[0] == idx.shape[0]


@register_sampler(nn.Embedding, supports=_embedding_supported)
def _embedding(layer: nn.Embedding, a: torch.Tensor, g: torch.Tensor, with_sum: bool):
    # each cell's gradient is g_n on the looked-up row only
    idx = (a.reshape(-1) if a.dim() == 2 else a).long()
    g = g.reshape(idx.shape[0], -1)
    if layer.padding_idx is not None:
        g = g * (idx != layer.padding_idx).unsqueeze(1)
    sq = torch.zeros_like(layer.weight).index_add_(0, idx, g.square())
    total = torch.zeros_like(layer.weight).index_add_(0, idx, g) if with_sum else None
    return {"weight": (sq, total)}


def _affine_norm(layer: nn.Module, xhat: torch.Tensor, g: torch.Tensor, with_sum: bool):
    # a per-cell affine map y = γ x̂ + β: cell n's gradients are g_n x̂_n and g_n
    out = {}
    if layer.weight is not None:
        gw = g * xhat
        out["weight"] = (gw.square().sum(0), gw.sum(0) if with_sum else None)
    if layer.bias is not None:
        out["bias"] = (g.square().sum(0), g.sum(0) if with_sum else None)
    return out


@register_sampler(
    nn.BatchNorm1d,
    supports=lambda layer, a, out: a.dim() == 2 and not layer.training and layer.running_mean is not None,
)
def _batchnorm_eval(layer: nn.BatchNorm1d, a: torch.Tensor, g: torch.Tensor, with_sum: bool):
    # in eval mode BatchNorm normalises each cell with the stored statistics: cells do not interact
    xhat = (a - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps)
    return _affine_norm(layer, xhat, g, with_sum)


@register_sampler(
    nn.LayerNorm, supports=lambda layer, a, out: a.dim() == 2 and tuple(layer.normalized_shape) == (a.shape[1],)
)
def _layernorm(layer: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor, with_sum: bool):
    xhat = nn.functional.layer_norm(a, layer.normalized_shape, eps=layer.eps)
    return _affine_norm(layer, xhat, g, with_sum)
