"""Per-sample diagonal Fisher information of scvi-tools modules (and plain torch networks)."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec

Estimator = Literal["per_sample", "per_batch", "sampled"]
Engine = Literal["vectorized", "loop"]
PerCellLoss = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]

_ESTIMATORS = ("per_sample", "per_batch", "sampled")
_ENGINES = ("vectorized", "loop")
_LOSSES = ("elbo", "reconstruction")
_BATCHNORM = (nn.BatchNorm1d,)
_TAPPED = (nn.Linear, nn.BatchNorm1d, nn.LayerNorm, nn.Embedding)


class DiagonalFisher(dict):
    """Diagonal Fisher information: a ``dict`` mapping parameter names to tensors.

    Values are CPU ``float64`` tensors shaped like the parameters. Parameters that receive no
    gradient from the loss (for example scVI's ``l_encoder`` with the observed library size, or
    ``px_r_decoder`` and ``px_dropout_decoder`` with a negative binomial and ``dispersion="gene"``)
    are *not* in the dict: they are listed in :attr:`no_gradient`, so they can never pass as
    "zero Fisher".

    Attributes
    ----------
    n_cells
        Number of cells averaged over.
    estimator
        ``"per_sample"``, ``"per_batch"`` or ``"sampled"``.
    loss
        The per-cell loss differentiated (``"elbo"``: negative ELBO; ``"reconstruction"``: negative
        log-likelihood only).
    no_gradient
        Names of parameters the loss does not depend on.
    mean_gradient
        Mean over cells of the per-cell gradient (same keys as the dict); empty unless requested
        with ``return_gradient=True``.
    engines
        How each parameter's per-cell gradients were obtained: ``"hook"`` (vectorised layer hooks),
        ``"substitution"`` (one copy of a broadcast parameter per cell), ``"jacobian"`` (batched
        backward over micro-batches), ``"loop"`` (one backward pass per cell) or
        ``"batch"`` (the per-batch estimator).
    seconds
        Wall time of the computation.
    """

    def __init__(
        self,
        values: dict[str, torch.Tensor],
        *,
        n_cells: int,
        estimator: str,
        loss: str,
        no_gradient: Iterable[str] = (),
        mean_gradient: dict[str, torch.Tensor] | None = None,
        engines: dict[str, str] | None = None,
        seconds: float = float("nan"),
    ):
        super().__init__(values)
        self.n_cells = int(n_cells)
        self.estimator = estimator
        self.loss = loss
        self.no_gradient = tuple(no_gradient)
        self.mean_gradient = dict(mean_gradient or {})
        self.engines = dict(engines or {})
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        n = sum(v.numel() for v in self.values())
        return (
            f"DiagonalFisher({len(self)} tensors, {n:,} values, n_cells={self.n_cells}, "
            f"estimator={self.estimator!r}, loss={self.loss!r}, no_gradient={list(self.no_gradient)})"
        )

    def flat(self) -> torch.Tensor:
        """All values concatenated in key order (float64)."""
        if not self:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([v.reshape(-1) for v in self.values()])


# ---------------------------------------------------------------------------------------------
# per-cell losses of scvi-tools modules
# ---------------------------------------------------------------------------------------------
def _posterior_mean_outputs(module: nn.Module, tensors: dict) -> tuple[dict, dict]:
    from scforget import _compat

    inference = dict(module.inference(**_compat.inference_input(module, tensors)))
    qz = inference.get("qz")
    if qz is None or not hasattr(qz, "loc"):
        raise TypeError(
            f"{type(module).__name__}.inference returns no Gaussian posterior 'qz'; the Fisher engine "
            "supports scvi-tools VAE modules (SCVI, CondSCVI, SCANVI)."
        )
    encoder = getattr(module, "z_encoder", None)
    transform = getattr(encoder, "z_transformation", None)
    inference["z"] = transform(qz.loc) if callable(transform) else qz.loc
    generative = dict(module.generative(**_compat.generative_input(module, tensors, inference)))
    return inference, generative


def elbo_per_cell(module: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell negative ELBO (reconstruction NLL + local KL, KL weight 1) at the posterior mean.

    The encoder's posterior mean replaces the sampled ``z``, so the value is deterministic. The
    terms come from the module's own :class:`~scvi.module.base.LossOutput` (``reconstruction_loss``
    and ``kl_local``, one value per cell), never from its batch-averaged ``loss``, so cells do not
    mix.

    Parameters
    ----------
    module
        An scvi-tools VAE module (``VAE``, ``VAEC``, ``SCANVAE``).
    tensors
        A minibatch from the model's data loader.

    Returns
    -------
    Tensor with one value per cell.
    """
    from scvi.module.base import LossOutput

    inference, generative = _posterior_mean_outputs(module, tensors)
    out = module.loss(tensors, inference, generative, kl_weight=1.0)
    return LossOutput.dict_sum(out.reconstruction_loss) + LossOutput.dict_sum(out.kl_local)


def reconstruction_per_cell(module: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell reconstruction negative log-likelihood at the posterior mean (see :func:`elbo_per_cell`)."""
    from scvi.module.base import LossOutput

    inference, generative = _posterior_mean_outputs(module, tensors)
    out = module.loss(tensors, inference, generative, kl_weight=1.0)
    return LossOutput.dict_sum(out.reconstruction_loss)


@torch.no_grad()
def sample_counts(module: nn.Module, tensors: dict[str, torch.Tensor], *, max_tries: int = 20) -> dict:
    """A copy of ``tensors`` whose counts are drawn from the model's likelihood at the posterior mean.

    Used by the ``"sampled"`` (true Fisher) estimator. Cells whose draw has zero total counts are
    redrawn (the observed library size must be positive).
    """
    _, generative = _posterior_mean_outputs(module, tensors)
    px = generative["px"]
    # scvi-tools samples under inference mode; clone to get ordinary tensors
    x = px.sample().clone()
    for _ in range(max_tries):
        empty = x.sum(-1) <= 0
        if not bool(empty.any()):
            break
        x[empty] = px.sample().clone()[empty]
    else:
        raise RuntimeError("Sampled counts kept summing to zero for some cells; the model's rates are degenerate.")
    out = dict(tensors)
    out["X"] = x.to(tensors["X"].dtype)
    return out


# ---------------------------------------------------------------------------------------------
# the vectorised engine: layer hooks, then per-cell parameter copies or Jacobians, then a loop
# ---------------------------------------------------------------------------------------------
class _Record:
    __slots__ = ("calls", "grad", "inp", "module", "name", "out")

    def __init__(self, name: str, module: nn.Module):
        self.name = name
        self.module = module
        self.calls = 0
        self.inp: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None

    @property
    def params(self) -> list[str]:
        pre = f"{self.name}." if self.name else ""
        return [pre + p for p, _ in self.module.named_parameters(recurse=False)]

    def supported(self) -> bool:
        """Called once, with an input and output of a shape the closed forms handle."""
        mod, a, out = self.module, self.inp, self.out
        if self.calls != 1 or a is None or not isinstance(out, torch.Tensor) or not out.requires_grad:
            return False
        if isinstance(mod, nn.Linear):
            return a.dim() == 2 and out.dim() == 2
        if isinstance(mod, nn.BatchNorm1d):
            return a.dim() == 2 and not mod.training and mod.running_mean is not None
        if isinstance(mod, nn.LayerNorm):
            return a.dim() == 2 and tuple(mod.normalized_shape) == (a.shape[1],)
        if isinstance(mod, nn.Embedding):
            idx = a.reshape(-1) if a.dim() == 2 and a.shape[1] == 1 else a
            return idx.dim() == 1 and mod.max_norm is None and out.shape[0] == idx.shape[0]
        return False


class _LayerTap:
    """Forward hooks that let the per-cell squared gradients of common layers be computed in closed form.

    The hooks keep each layer's input and output; one backward pass then asks autograd for the
    gradients at the layer *outputs* only (no weight gradients are formed). For a linear layer
    ``y = W a + b`` the gradient of cell ``n``'s loss is ``g_n a_nᵀ`` (``g_n`` the gradient at the
    layer output), so ``Σ_n (g_n a_nᵀ)² = (g²)ᵀ (a²)`` elementwise: one
    matrix product per batch, no per-cell gradients materialised. BatchNorm in eval mode and
    LayerNorm are per-cell affine maps (``Σ_n (g_n x̂_n)²``), embeddings scatter ``g_n²`` onto the
    looked-up rows. Layers called more than once per forward pass, or with inputs of another shape,
    are left to the generic fallback.
    """

    def __init__(self, module: nn.Module, wanted: set[str]):
        self.records: dict[str, _Record] = {}
        self.handles = []
        self.enabled = True
        for name, mod in module.named_modules():
            if not isinstance(mod, _TAPPED):
                continue
            own = {f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False)}
            if not own or not own <= wanted:
                continue
            rec = _Record(name, mod)
            self.records[name] = rec
            self.handles.append(mod.register_forward_hook(partial(self._forward, rec)))

    def _forward(self, rec: _Record, mod: nn.Module, inputs: tuple, output: Any) -> None:
        if not self.enabled:
            return
        rec.calls += 1
        rec.inp = inputs[0].detach() if inputs and isinstance(inputs[0], torch.Tensor) else None
        rec.out = output if isinstance(output, torch.Tensor) else None

    def reset(self) -> None:
        for rec in self.records.values():
            rec.calls, rec.inp, rec.out, rec.grad = 0, None, None, None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def supported(self) -> list[_Record]:
        """Records whose parameters get closed-form per-cell gradients in this batch."""
        return [rec for rec in self.records.values() if rec.supported()]


def _closed_form(rec: _Record, with_sum: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``Σ_n (∂ℓ_n/∂θ)²`` (and ``Σ_n ∂ℓ_n/∂θ`` if ``with_sum``) of a supported layer from its input and output gradient."""
    mod, a, g = rec.module, rec.inp, rec.grad
    sq: dict[str, torch.Tensor] = {}
    total: dict[str, torch.Tensor] = {}
    if isinstance(mod, nn.Linear):
        g2 = g.square()
        sq["weight"] = g2.t() @ a.square()
        if with_sum:
            total["weight"] = g.t() @ a
        if mod.bias is not None:
            sq["bias"] = g2.sum(0)
            total["bias"] = g.sum(0)
        return sq, total
    if isinstance(mod, nn.Embedding):
        idx = (a.reshape(-1) if a.dim() == 2 else a).long()
        g = g.reshape(idx.shape[0], -1)
        if mod.padding_idx is not None:
            g = g * (idx != mod.padding_idx).unsqueeze(1)
        sq["weight"] = torch.zeros_like(mod.weight).index_add_(0, idx, g.square())
        total["weight"] = torch.zeros_like(mod.weight).index_add_(0, idx, g)
        return sq, total
    if isinstance(mod, nn.BatchNorm1d):
        xhat = (a - mod.running_mean) / torch.sqrt(mod.running_var + mod.eps)
    else:  # LayerNorm
        xhat = nn.functional.layer_norm(a, mod.normalized_shape, eps=mod.eps)
    if mod.weight is not None:
        gw = g * xhat
        sq["weight"] = gw.square().sum(0)
        total["weight"] = gw.sum(0)
    if mod.bias is not None:
        sq["bias"] = g.square().sum(0)
        total["bias"] = g.sum(0)
    return sq, total


class _LossModule(nn.Module):
    """Wraps ``module`` so :func:`torch.func.functional_call` can swap its parameters."""

    def __init__(self, inner: nn.Module, fn: PerCellLoss):
        super().__init__()
        self.inner = inner
        self._fn = fn

    def forward(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._fn(self.inner, tensors)


def _n_of(tensors: dict) -> int:
    return int(next(iter(tensors.values())).shape[0])


def _expanded_grads(
    module: nn.Module, fn: PerCellLoss, names: list[str], params: dict[str, nn.Parameter], tensors: dict
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-cell gradients of parameters used by broadcasting, via one copy of each per cell.

    Each parameter ``p`` is replaced by a leaf of shape ``(n, *p.shape)`` holding ``n`` copies of
    ``p``; if the module only combines ``p`` elementwise with per-cell tensors, row ``i`` of the
    gradient of the summed loss is cell ``i``'s gradient. :func:`_substitution_works` checks this.
    """
    from torch.func import functional_call

    n = _n_of(tensors)
    leaves = {
        k: params[k].detach().unsqueeze(0).expand(n, *params[k].shape).clone().requires_grad_(True) for k in names
    }
    losses = functional_call(_LossModule(module, fn), {f"inner.{k}": v for k, v in leaves.items()}, (tensors,))
    grads = torch.autograd.grad(losses.sum(), list(leaves.values()), allow_unused=True)
    return losses, {k: g for k, g in zip(names, grads, strict=True) if g is not None}


def _substitution_works(
    module: nn.Module, fn: PerCellLoss, name: str, params: dict[str, nn.Parameter], tensors: dict
) -> bool:
    """Whether :func:`_expanded_grads` is exact for ``name`` (checked against single-cell passes)."""
    n = min(_n_of(tensors), 3)
    sub = {k: v[:n] for k, v in tensors.items()}
    try:
        losses, grads = _expanded_grads(module, fn, [name], params, sub)
    except (RuntimeError, ValueError, IndexError, TypeError):
        return False
    if losses.shape != (n,) or name not in grads:
        return False
    for i in range(n):
        ref = torch.autograd.grad(fn(module, {k: v[i : i + 1] for k, v in sub.items()}).sum(), params[name])[0]
        if not torch.allclose(grads[name][i], ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()) + 1e-12):
            return False
    return True


def _jacobian_square_sums(
    module: nn.Module,
    fn: PerCellLoss,
    names: list[str],
    params: dict[str, nn.Parameter],
    tensors: dict,
    micro_batch: int = 16,
) -> dict[str, torch.Tensor]:
    """Per-cell gradients as Jacobian rows (batched backward over micro-batches of cells)."""
    out = {k: torch.zeros_like(params[k], dtype=torch.float64) for k in names}
    n = _n_of(tensors)
    plist = [params[k] for k in names]
    for s in range(0, n, micro_batch):
        sub = {k: v[s : s + micro_batch] for k, v in tensors.items()}
        losses = fn(module, sub)
        eye = torch.eye(losses.shape[0], dtype=losses.dtype, device=losses.device)
        grads = torch.autograd.grad(losses, plist, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        for k, g in zip(names, grads, strict=True):
            if g is not None:
                out[k] += g.double().square().sum(0)
    return out


def _loop_square_sums(
    fn: PerCellLoss, module: nn.Module, names: list[str], params: dict[str, nn.Parameter], tensors: dict
) -> dict[str, torch.Tensor]:
    plist = [params[k] for k in names]
    out = {k: torch.zeros_like(params[k], dtype=torch.float64) for k in names}
    n = next(iter(tensors.values())).shape[0]
    for i in range(n):
        loss = fn(module, {k: v[i : i + 1] for k, v in tensors.items()}).sum()
        grads = torch.autograd.grad(loss, plist, allow_unused=True)
        for k, gr in zip(names, grads, strict=True):
            if gr is not None:
                out[k] += gr.double().square()
    return out


@contextlib.contextmanager
def _evaluation_mode(module: nn.Module) -> Iterator[dict[str, nn.Parameter]]:
    """Eval mode, every parameter requiring grad, caller's RNG state untouched; all restored after."""
    was_training = module.training
    params = dict(module.named_parameters())
    flags = {k: p.requires_grad for k, p in params.items()}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        try:
            module.eval()
            for p in params.values():
                p.requires_grad_(True)
            yield params
        finally:
            for k, p in params.items():
                p.requires_grad_(flags[k])
            module.train(was_training)


def accumulate_square_gradients(
    module: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    per_cell_loss: PerCellLoss,
    *,
    estimator: Literal["per_sample", "per_batch"] = "per_sample",
    engine: Engine = "vectorized",
    transform: Callable[[dict], dict] | None = None,
    parameters: Iterable[str] | None = None,
    with_gradient: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int, set[str], dict[str, str]]:
    """Sums of squared per-cell (or per-batch) gradients of any torch module.

    The building block of :func:`diagonal`; also used for the classifier baselines.

    Parameters
    ----------
    module
        The network (put in eval mode during the call).
    batches
        Minibatches as dicts of tensors whose first dimension indexes cells.
    per_cell_loss
        ``per_cell_loss(module, tensors)`` returns one loss per cell; cells must not interact.
    estimator
        ``"per_sample"``: ``Σ_n (∂ℓ_n/∂θ)²``; ``"per_batch"``: ``Σ_b (∂Σ_{n∈b} ℓ_n/∂θ)²``.
    engine
        ``"vectorized"`` (layer hooks; per-cell parameter copies or batched Jacobians for the
        remaining parameters; a
        per-cell loop if that fails) or ``"loop"`` (one backward pass per cell; the reference).
    transform
        Applied to each batch before the loss (e.g. :func:`sample_counts`).
    parameters
        Names of the parameters to include (default: all).
    with_gradient
        Also sum the gradients of layers handled in closed form (one more matrix product per
        layer); otherwise their entries of ``gradient_sums`` stay zero.

    Returns
    -------
    ``(square_sums, gradient_sums, n_cells, no_gradient, engines)``; sums are float64.
    """
    with _evaluation_mode(module) as all_params:
        names = list(all_params) if parameters is None else [k for k in all_params if k in set(parameters)]
        params = {k: all_params[k] for k in names}
        sq = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
        gsum = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
        seen: set[str] = set()
        engines: dict[str, str] = {}
        n_cells = 0
        vectorized = engine == "vectorized" and estimator == "per_sample"
        tap = _LayerTap(module, set(names)) if vectorized else None
        owned = {
            f"{r.name}.{p}" if r.name else p
            for r in (tap.records.values() if tap else ())
            for p, _ in r.module.named_parameters(recurse=False)
        }
        substituted: list[str] | None = None
        jacobian_ok = True
        try:
            for tensors in batches:
                if transform is not None:
                    tensors = transform(tensors)
                n_cells += _n_of(tensors)
                if vectorized and substituted is None:
                    # once: which parameters outside hooked layers can be given one copy per cell
                    tap.enabled = False
                    substituted = [
                        k
                        for k in names
                        if k not in owned and _substitution_works(module, per_cell_loss, k, params, tensors)
                    ]
                    tap.enabled = True
                subst = substituted or []
                if tap is not None:
                    tap.reset()
                leaves = {}
                if subst:
                    from torch.func import functional_call

                    n = _n_of(tensors)
                    leaves = {
                        k: params[k].detach().unsqueeze(0).expand(n, *params[k].shape).clone().requires_grad_(True)
                        for k in subst
                    }
                    wrapper = _LossModule(module, per_cell_loss)
                    losses = functional_call(wrapper, {f"inner.{k}": v for k, v in leaves.items()}, (tensors,))
                else:
                    losses = per_cell_loss(module, tensors)
                tapped = tap.supported() if tap is not None else []
                tapped_params = {k for rec in tapped for k in rec.params}
                plain = [k for k in names if k not in leaves and k not in tapped_params]
                inputs = [params[k] for k in plain] + list(leaves.values()) + [rec.out for rec in tapped]
                grads = torch.autograd.grad(losses.sum(), inputs, allow_unused=True)
                n_plain, n_leaves = len(plain), len(leaves)
                for rec, g in zip(tapped, grads[n_plain + n_leaves :], strict=True):
                    rec.grad = None if g is None else g.detach()
                grads = grads[: n_plain + n_leaves]
                live = []
                for k, gr in zip(plain + list(leaves), grads, strict=True):
                    if gr is None:
                        continue
                    seen.add(k)
                    if k in leaves:
                        gsum[k] += gr.double().sum(0)
                        sq[k] += gr.double().square().sum(0)
                        engines[k] = "substitution"
                        continue
                    gsum[k] += gr.double()
                    live.append(k)
                    if estimator == "per_batch":
                        sq[k] += gr.double().square()
                        engines[k] = "batch"
                if estimator == "per_batch":
                    continue
                if engine == "loop":
                    for k, v in _loop_square_sums(per_cell_loss, module, live, params, tensors).items():
                        sq[k] += v
                        engines[k] = "loop"
                    continue
                for rec in tapped:
                    if rec.grad is None:
                        continue
                    r_sq, r_sum = _closed_form(rec, with_gradient)
                    pre = f"{rec.name}." if rec.name else ""
                    for p_name, v in r_sq.items():
                        k = pre + p_name
                        if k in sq:
                            sq[k] += v.double()
                            seen.add(k)
                            engines[k] = "hook"
                            if p_name in r_sum:
                                gsum[k] += r_sum[p_name].double()
                done = tapped_params
                rest = [k for k in live if k not in done]
                if not rest:
                    continue
                tap.enabled = False
                try:
                    if jacobian_ok:
                        try:
                            for k, v in _jacobian_square_sums(module, per_cell_loss, rest, params, tensors).items():
                                sq[k] += v
                                engines[k] = "jacobian"
                            rest = []
                        except RuntimeError as err:
                            jacobian_ok = False
                            warnings.warn(
                                f"Batched per-cell gradients failed on {type(module).__name__} ({err}); using a "
                                f"per-cell loop for {len(rest)} parameter tensor(s) (slower, same result).",
                                UserWarning,
                                stacklevel=3,
                            )
                    if rest:
                        for k, v in _loop_square_sums(per_cell_loss, module, rest, params, tensors).items():
                            sq[k] += v
                            engines[k] = "loop"
                finally:
                    tap.enabled = True
        finally:
            if tap is not None:
                tap.remove()
    no_grad = {k for k in names if k not in seen}
    return sq, gsum, n_cells, no_grad, engines


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
def _check_choice(value: Any, options: tuple[str, ...], argument: str) -> None:
    if value not in options:
        raise ValueError(f"`{argument}` must be one of {', '.join(map(repr, options))}; got {value!r}.")


def diagonal(
    model: BaseModelClass,
    cells: CellSpec,
    *,
    estimator: Estimator = "per_sample",
    loss: Literal["elbo", "reconstruction"] = "elbo",
    batch_size: int = 128,
    engine: Engine = "vectorized",
    seed: int = 0,
    return_gradient: bool = False,
    progress_bar: bool = True,
) -> DiagonalFisher:
    r"""Diagonal Fisher information of a trained scvi-tools model on a set of cells.

    The default is the per-sample empirical Fisher

    .. math:: F_i = \frac{1}{N}\sum_{n=1}^N \left(\frac{\partial \ell_n}{\partial \theta_i}\right)^2,

    where :math:`\ell_n` is cell :math:`n`'s negative ELBO (reconstruction negative log-likelihood
    with the model's own likelihood and observed library size, plus the local KL term) evaluated at
    the posterior mean of :math:`z`, with the module in eval mode (dropout off, BatchNorm using its
    running statistics). The model is not modified and the caller's random state is untouched.

    Per-cell gradients are vectorised: linear, BatchNorm (eval mode), LayerNorm and embedding layers
    get the sum of squared per-cell gradients in closed form from forward/backward hooks (one matrix
    product per layer and batch, no per-cell gradient materialised); the remaining parameters (for
    example scVI's gene dispersion ``px_r``, CondSCVI's ``per_ct_bias``) use one copy per cell when
    they are used by broadcasting (verified against single-cell passes) or batched Jacobian rows
    over micro-batches otherwise, and a per-cell loop as the last resort (:func:`torch.func.vmap`
    cannot run these modules: their one-hot encodings inspect values). ``engine="loop"`` computes
    everything with one backward pass per cell (the reference implementation).

    Parameters
    ----------
    model
        A trained scvi-tools model (:class:`~scvi.model.SCVI`, :class:`~scvi.model.CondSCVI`,
        :class:`~scvi.model.SCANVI`, or scforget's subclasses).
    cells
        The cells (positions, mask or obs names of ``model.adata``).
    estimator
        ``"per_sample"``: empirical Fisher above. ``"per_batch"``: the reference study's estimator,
        :math:`\frac1N\sum_b (\partial \sum_{n\in b}\ell_n/\partial\theta)^2`, which depends on
        ``batch_size`` (for comparison only). ``"sampled"``: the true Fisher, with each cell's
        counts replaced by a draw from the model's likelihood at its posterior mean (one draw per
        cell, seeded by ``seed``).
    loss
        ``"elbo"`` (negative ELBO) or ``"reconstruction"`` (negative log-likelihood only).
    batch_size
        Cells per minibatch.
    engine
        ``"vectorized"`` or ``"loop"`` (see above).
    seed
        Seed of the count draws of ``estimator="sampled"``.
    return_gradient
        Also return the mean per-cell gradient (:attr:`DiagonalFisher.mean_gradient`; a little
        extra work).
    progress_bar
        Show a progress bar.

    Returns
    -------
    A :class:`DiagonalFisher` (a dict of tensors keyed by parameter name) that lists the
    parameters receiving no gradient in ``no_gradient``.

    Examples
    --------
    >>> fisher = scforget.fisher.diagonal(model, split.forget)
    >>> fisher.no_gradient
    ('l_encoder.encoder.fc_layers.Layer 0.0.weight', ...)
    """
    from scvi.utils import track

    from scforget import _compat
    from scforget.data import as_positions

    _check_choice(estimator, _ESTIMATORS, "estimator")
    _check_choice(loss, _LOSSES, "loss")
    _check_choice(engine, _ENGINES, "engine")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    module = getattr(model, "module", None)
    if module is None or not all(hasattr(module, a) for a in ("inference", "generative", "loss")):
        raise TypeError(
            f"`model` must be a trained scvi-tools VAE model (SCVI, CondSCVI, SCANVI); got {type(model).__name__}."
        )
    if _compat.is_minified(model):
        raise ValueError("`model` uses a minified AnnData without counts; the Fisher needs the full counts.")
    positions = as_positions(cells, model.adata.obs_names, argument="cells")

    fn = elbo_per_cell if loss == "elbo" else reconstruction_per_cell
    device = model.device
    loader = _compat.make_data_loader(model, positions, batch_size=int(batch_size))

    def batches() -> Iterator[dict]:
        for t in track(loader, description="Fisher", disable=not progress_bar):
            yield {k: v.to(device) for k, v in t.items() if isinstance(v, torch.Tensor)}

    transform = None
    if estimator == "sampled":
        transform = _SampledCounts(module, int(seed))
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(int(seed))
        sq, gsum, n, no_grad, engines = accumulate_square_gradients(
            module,
            batches(),
            fn,
            estimator="per_batch" if estimator == "per_batch" else "per_sample",
            engine=engine,
            transform=transform,
            with_gradient=return_gradient,
        )
    seconds = time.perf_counter() - start
    keep = [k for k in sq if k not in no_grad]
    return DiagonalFisher(
        {k: (sq[k] / n).cpu() for k in keep},
        n_cells=n,
        estimator=estimator,
        loss=loss,
        no_gradient=sorted(no_grad, key=list(sq).index),
        mean_gradient={k: (gsum[k] / n).cpu() for k in keep} if return_gradient else {},
        engines={k: engines.get(k, "none") for k in keep},
        seconds=seconds,
    )


class _SampledCounts:
    """Replace each batch's counts by draws from the model; batch ``b`` uses seed ``seed + b``.

    Seeding per batch makes the draws independent of any other random-number use in between, so
    every engine sees identical counts.
    """

    def __init__(self, module: nn.Module, seed: int):
        self.module = module
        self.seed = seed
        self.batch = 0

    def __call__(self, tensors: dict) -> dict:
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + self.batch)
            self.batch += 1
            return sample_counts(self.module, tensors)
