"""Per-sample diagonal Fisher information of scvi-tools modules (and plain torch networks)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from scforget._core import (
    FISHER_CLASSES,
    check_bool,
    check_choice,
    check_counts,
    check_int,
    check_model,
    fork_rng,
    minibatches,
    negative_elbo,
    posterior_mean_forward,
    reconstruction_log_prob,
    resolve_seed,
    seeded,
    tensors_to,
    warn,
)

from ._samplers import sampler_for

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec

Estimator = Literal["per_sample", "per_batch", "sampled"]
Engine = Literal["vectorized", "loop"]
PerCellLoss = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]

_ESTIMATORS = ("per_sample", "per_batch", "sampled")
_ENGINES = ("vectorized", "loop")
_LOSSES = ("elbo", "reconstruction")


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
def elbo_per_cell(module: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell negative ELBO (reconstruction NLL + local KL, KL weight 1) at the posterior mean.

    The encoder's posterior mean replaces the sampled ``z`` and the observed library size the
    sampled one, so the value is deterministic. Cells never mix (no batch mean is taken). For scVI
    and CondSCVI (standard normal prior) the terms are computed directly, the negative binomial on
    the non-zero counts only; otherwise they come from the module's own
    :class:`~scvi.module.base.LossOutput`.

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
    return negative_elbo(module, tensors)


def reconstruction_per_cell(module: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell reconstruction negative log-likelihood at the posterior mean (see :func:`elbo_per_cell`)."""
    _, generative = posterior_mean_forward(module, tensors)
    return -reconstruction_log_prob(module, tensors, generative)


@torch.no_grad()
def sample_counts(module: nn.Module, tensors: dict[str, torch.Tensor], *, max_tries: int = 20) -> dict:
    """A copy of ``tensors`` whose counts are drawn from the model's likelihood at the posterior mean.

    Used by the ``"sampled"`` (true Fisher) estimator. Cells whose draw has zero total counts are
    redrawn (the observed library size must be positive).
    """
    _, generative = posterior_mean_forward(module, tensors)
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
# accumulators and the pieces of the vectorised engine
# ---------------------------------------------------------------------------------------------
def _n_of(tensors: dict) -> int:
    return int(next(v for v in tensors.values() if isinstance(v, torch.Tensor)).shape[0])


def _one_cell(tensors: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in tensors.items()}


class _Sums:
    """Running sums of squared per-cell gradients and of gradients, per parameter (float64)."""

    def __init__(self, params: dict[str, nn.Parameter]):
        self.sq = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
        self.total = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
        self.seen: set[str] = set()
        self.engines: dict[str, str] = {}
        self.n_cells = 0

    def add(self, name: str, square: torch.Tensor, engine: str, total: torch.Tensor | None = None) -> None:
        self.sq[name] += square.double()
        if total is not None:
            self.total[name] += total.double()
        self.seen.add(name)
        self.engines[name] = engine


class _Record:
    """Input and output of one tapped layer in the current forward pass."""

    __slots__ = ("calls", "entry", "grad", "inp", "module", "name", "out")

    def __init__(self, name: str, module: nn.Module, entry):
        self.name, self.module, self.entry = name, module, entry
        self.calls = 0
        self.inp: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None

    @property
    def params(self) -> list[str]:
        pre = f"{self.name}." if self.name else ""
        return [pre + p for p, _ in self.module.named_parameters(recurse=False)]

    def supported(self) -> bool:
        """Called once, with an input and output of a shape its sampler handles."""
        out = self.out
        if self.calls != 1 or self.inp is None or not isinstance(out, torch.Tensor) or not out.requires_grad:
            return False
        return bool(self.entry.supports(self.module, self.inp, out))


class _LayerTap:
    """Forward hooks keeping the input and output of every layer that has a registered sampler.

    One backward pass then asks autograd for the gradients at those layers' *outputs* only; each
    layer's sampler (see :mod:`scforget.fisher._samplers`) turns them into per-cell squared sums.
    Layers called more than once per forward pass, or with inputs of another shape, are left to the
    generic fallbacks.
    """

    def __init__(self, module: nn.Module, wanted: set[str]):
        self.records: dict[str, _Record] = {}
        self.handles = []
        self.enabled = True
        for name, mod in module.named_modules():
            entry = sampler_for(mod)
            own = {f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False)}
            if entry is None or not own or not own <= wanted:
                continue
            rec = _Record(name, mod, entry)
            self.records[name] = rec
            self.handles.append(mod.register_forward_hook(partial(self._forward, rec)))

    def _forward(self, rec: _Record, mod: nn.Module, inputs: tuple, output: Any) -> None:
        if not self.enabled:
            return
        rec.calls += 1
        rec.inp = inputs[0].detach() if inputs and isinstance(inputs[0], torch.Tensor) else None
        rec.out = output if isinstance(output, torch.Tensor) else None

    @property
    def owned(self) -> set[str]:
        """Parameters of tapped layers."""
        return {k for rec in self.records.values() for k in rec.params}

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    def reset(self) -> None:
        for rec in self.records.values():
            rec.calls, rec.inp, rec.out, rec.grad = 0, None, None, None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def supported(self) -> list[_Record]:
        """Records whose parameters get closed-form per-cell sums in this batch."""
        return [rec for rec in self.records.values() if rec.supported()]


class _LossModule(nn.Module):
    """Wraps ``module`` so :func:`torch.func.functional_call` can swap its parameters."""

    def __init__(self, inner: nn.Module, fn: PerCellLoss):
        super().__init__()
        self.inner = inner
        self._fn = fn

    def forward(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._fn(self.inner, tensors)


def _per_cell_copies(params: dict[str, nn.Parameter], names: list[str], n: int) -> dict[str, torch.Tensor]:
    """For each parameter, a leaf holding ``n`` copies of it, one per cell."""
    return {k: params[k].detach().unsqueeze(0).expand(n, *params[k].shape).clone().requires_grad_(True) for k in names}


def _losses_with_copies(module: nn.Module, fn: PerCellLoss, leaves: dict[str, torch.Tensor], tensors: dict):
    from torch.func import functional_call

    return functional_call(_LossModule(module, fn), {f"inner.{k}": v for k, v in leaves.items()}, (tensors,))


def _substitution_works(
    module: nn.Module, fn: PerCellLoss, name: str, params: dict[str, nn.Parameter], tensors: dict
) -> bool:
    """Whether per-cell copies give exact per-cell gradients for ``name`` (checked against single-cell passes).

    Each parameter ``p`` is replaced by ``n`` copies; if the module only combines ``p`` elementwise
    with per-cell tensors (e.g. scVI's gene dispersion ``px_r``), row ``i`` of the gradient of the
    summed loss is cell ``i``'s gradient.
    """
    n = min(_n_of(tensors), 3)
    sub = {k: v[:n] for k, v in tensors.items()}
    try:
        leaves = _per_cell_copies(params, [name], n)
        losses = _losses_with_copies(module, fn, leaves, sub)
        (grad,) = torch.autograd.grad(losses.sum(), [leaves[name]], allow_unused=True)
    except (RuntimeError, ValueError, IndexError, TypeError):
        return False
    if losses.shape != (n,) or grad is None:
        return False
    for i in range(n):
        ref = torch.autograd.grad(fn(module, _one_cell(sub, i)).sum(), params[name])[0]
        if not torch.allclose(grad[i], ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()) + 1e-12):
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
    plist = [params[k] for k in names]
    for s in range(0, _n_of(tensors), micro_batch):
        losses = fn(module, {k: v[s : s + micro_batch] for k, v in tensors.items()})
        eye = torch.eye(losses.shape[0], dtype=losses.dtype, device=losses.device)
        grads = torch.autograd.grad(losses, plist, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        for k, g in zip(names, grads, strict=True):
            if g is not None:
                out[k] += g.double().square().sum(0)
    return out


def _loop_sums(
    fn: PerCellLoss, module: nn.Module, names: list[str], params: dict[str, nn.Parameter], tensors: dict
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], set[str]]:
    """One backward pass per cell: ``(square sums, sums, parameters with a gradient)`` (the reference)."""
    plist = [params[k] for k in names]
    sq = {k: torch.zeros_like(params[k], dtype=torch.float64) for k in names}
    total = {k: torch.zeros_like(params[k], dtype=torch.float64) for k in names}
    seen: set[str] = set()
    for i in range(_n_of(tensors)):
        grads = torch.autograd.grad(fn(module, _one_cell(tensors, i)).sum(), plist, allow_unused=True)
        for k, g in zip(names, grads, strict=True):
            if g is not None:
                sq[k] += g.double().square()
                total[k] += g.double()
                seen.add(k)
    return sq, total, seen


class _Vectorised:
    """Per-cell squared sums of one batch at a time: layer samplers, per-cell copies, Jacobians, a loop."""

    def __init__(self, module: nn.Module, fn: PerCellLoss, params: dict[str, nn.Parameter], with_gradient: bool):
        self.module, self.fn, self.params, self.with_gradient = module, fn, params, with_gradient
        self.tap = _LayerTap(module, set(params))
        self.substituted: list[str] | None = None
        self.jacobian_ok = True

    def close(self) -> None:
        self.tap.remove()

    def _choose_substitutions(self, tensors: dict) -> None:
        owned = self.tap.owned
        with self.tap.paused():
            self.substituted = [
                k
                for k in self.params
                if k not in owned and _substitution_works(self.module, self.fn, k, self.params, tensors)
            ]

    def add(self, tensors: dict, sums: _Sums) -> None:
        if self.substituted is None:
            self._choose_substitutions(tensors)
        self.tap.reset()
        leaves = _per_cell_copies(self.params, self.substituted, _n_of(tensors)) if self.substituted else {}
        losses = _losses_with_copies(self.module, self.fn, leaves, tensors) if leaves else self.fn(self.module, tensors)
        tapped = self.tap.supported()
        tapped_params = {k for rec in tapped for k in rec.params}
        plain = [k for k in self.params if k not in leaves and k not in tapped_params]
        inputs = [self.params[k] for k in plain] + list(leaves.values()) + [rec.out for rec in tapped]
        grads = torch.autograd.grad(losses.sum(), inputs, allow_unused=True)
        g_plain, g_leaves, g_tapped = (
            grads[: len(plain)],
            grads[len(plain) : len(plain) + len(leaves)],
            grads[len(plain) + len(leaves) :],
        )
        for k, g in zip(leaves, g_leaves, strict=True):
            if g is not None:
                sums.add(k, g.square().sum(0), "substitution", g.sum(0))
        for rec, g in zip(tapped, g_tapped, strict=True):
            if g is None:
                continue
            pre = f"{rec.name}." if rec.name else ""
            for p_name, (square, total) in rec.entry.sampler(
                rec.module, rec.inp, g.detach(), self.with_gradient
            ).items():
                sums.add(pre + p_name, square, "hook", total)
        live = [k for k, g in zip(plain, g_plain, strict=True) if g is not None]
        for k, g in zip(plain, g_plain, strict=True):
            if g is not None:
                sums.total[k] += g.double()
        if live:
            with self.tap.paused():
                self._per_cell_rest(live, tensors, sums)

    def _per_cell_rest(self, names: list[str], tensors: dict, sums: _Sums) -> None:
        if self.jacobian_ok:
            try:
                for k, v in _jacobian_square_sums(self.module, self.fn, names, self.params, tensors).items():
                    sums.add(k, v, "jacobian")
                return
            except RuntimeError as err:
                self.jacobian_ok = False
                warn(
                    f"Batched per-cell gradients failed on {type(self.module).__name__} ({err}); using a per-cell "
                    f"loop for {len(names)} parameter tensor(s) (slower, same result)."
                )
        sq, _, seen = _loop_sums(self.fn, self.module, names, self.params, tensors)
        for k in seen:
            sums.add(k, sq[k], "loop")


@contextlib.contextmanager
def _evaluation_mode(module: nn.Module) -> Iterator[dict[str, nn.Parameter]]:
    """Eval mode, every parameter requiring grad, caller's random state untouched; all restored after."""
    was_training = module.training
    params = dict(module.named_parameters())
    flags = {k: p.requires_grad for k, p in params.items()}
    with fork_rng(), torch.enable_grad():
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

    The building block of :func:`diagonal` and :func:`module_diagonal`.

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
        ``"vectorized"`` (layer samplers; per-cell parameter copies or batched Jacobians for the
        remaining parameters; a per-cell loop if those fail) or ``"loop"`` (one backward pass per
        cell; the reference).
    transform
        Applied to each batch before the loss (e.g. :func:`sample_counts`).
    parameters
        Names of the parameters to include (default: all).
    with_gradient
        Also sum the gradients (``gradient_sums``); otherwise the entries of layers handled in closed
        form stay zero.

    Returns
    -------
    ``(square_sums, gradient_sums, n_cells, no_gradient, engines)``; sums are float64.
    """
    with _evaluation_mode(module) as all_params:
        wanted = None if parameters is None else set(parameters)
        params = {k: p for k, p in all_params.items() if wanted is None or k in wanted}
        sums = _Sums(params)
        vectorised = (
            _Vectorised(module, per_cell_loss, params, with_gradient)
            if (engine == "vectorized" and estimator == "per_sample")
            else None
        )
        try:
            for tensors in batches:
                tensors = transform(tensors) if transform is not None else tensors
                sums.n_cells += _n_of(tensors)
                if vectorised is not None:
                    vectorised.add(tensors, sums)
                elif estimator == "per_batch":
                    grads = torch.autograd.grad(
                        per_cell_loss(module, tensors).sum(), list(params.values()), allow_unused=True
                    )
                    for k, g in zip(params, grads, strict=True):
                        if g is not None:
                            sums.add(k, g.square(), "batch", g)
                else:
                    sq, total, seen = _loop_sums(per_cell_loss, module, list(params), params, tensors)
                    for k in seen:
                        sums.add(k, sq[k], "loop", total[k])
        finally:
            if vectorised is not None:
                vectorised.close()
    no_grad = {k for k in params if k not in sums.seen}
    return sums.sq, sums.total, sums.n_cells, no_grad, sums.engines


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------
def _result(sq, total, n, no_grad, engines, *, estimator, loss, return_gradient, seconds) -> DiagonalFisher:
    keep = [k for k in sq if k not in no_grad]
    return DiagonalFisher(
        {k: (sq[k] / max(n, 1)).cpu() for k in keep},
        n_cells=n,
        estimator=estimator,
        loss=loss,
        no_gradient=sorted(no_grad, key=list(sq).index),
        mean_gradient={k: (total[k] / max(n, 1)).cpu() for k in keep} if return_gradient else {},
        engines={k: engines.get(k, "none") for k in keep},
        seconds=seconds,
    )


def module_diagonal(
    module: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    per_cell_loss: PerCellLoss = elbo_per_cell,
    loss: str = "custom",
    estimator: Literal["per_sample", "per_batch"] = "per_sample",
    engine: Engine = "vectorized",
    device=None,
    return_gradient: bool = False,
) -> DiagonalFisher:
    """Per-sample diagonal Fisher of any torch module over minibatches (no model or AnnData needed).

    The lower-level form of :func:`diagonal`, for modules built outside a model (e.g. a classifier)
    or for a plan that holds a module and data loaders.

    Parameters
    ----------
    module
        The network (eval mode during the call; its mode and ``requires_grad`` flags are restored).
    batches
        Minibatches: dicts of tensors whose first dimension indexes cells (e.g. a scvi-tools loader).
    per_cell_loss
        ``per_cell_loss(module, tensors)`` returns one loss per cell (default: the negative ELBO).
    loss
        Name of the loss, recorded in the result.
    estimator
        ``"per_sample"`` or ``"per_batch"`` (see :func:`diagonal`).
    engine
        ``"vectorized"`` or ``"loop"``.
    device
        Move each batch to this device first.
    return_gradient
        Also return the mean per-cell gradient.

    Returns
    -------
    A :class:`DiagonalFisher`.
    """
    check_choice(engine, _ENGINES, "engine")
    check_choice(estimator, ("per_sample", "per_batch"), "estimator")
    return_gradient = check_bool(return_gradient, "return_gradient")
    moved = (tensors_to(t, device) if device is not None else t for t in batches)
    start = time.perf_counter()
    out = accumulate_square_gradients(
        module, moved, per_cell_loss, estimator=estimator, engine=engine, with_gradient=return_gradient
    )
    return _result(
        *out, estimator=estimator, loss=loss, return_gradient=return_gradient, seconds=time.perf_counter() - start
    )


def diagonal(
    model: BaseModelClass,
    cells: CellSpec,
    *,
    estimator: Estimator = "per_sample",
    loss: Literal["elbo", "reconstruction"] = "elbo",
    batch_size: int = 128,
    engine: Engine = "vectorized",
    seed: int | None = None,
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

    Per-cell gradients are vectorised: layers with a registered sampler (linear, BatchNorm in eval
    mode, LayerNorm, embedding; see :mod:`scforget.fisher._samplers`) get the sum of squared
    per-cell gradients in closed form from their inputs and output gradients (one matrix product per
    layer and batch, no per-cell gradient materialised); the remaining parameters (for example
    scVI's gene dispersion ``px_r``, CondSCVI's ``per_ct_bias``) use one copy per cell when they are
    used by broadcasting (verified against single-cell passes) or batched Jacobian rows over
    micro-batches otherwise, and a per-cell loop as the last resort (:func:`torch.func.vmap`
    cannot run these modules: their one-hot encodings inspect values). ``engine="loop"`` computes
    everything with one backward pass per cell (the reference implementation).

    Parameters
    ----------
    model
        A trained :class:`~scvi.model.SCVI`, :class:`~scvi.model.CondSCVI` or
        :class:`~scvi.model.SCANVI` (or scforget's subclasses).
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
        Seed of the count draws of ``estimator="sampled"``; ``None`` follows :attr:`scvi.settings.seed`.
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

    from scforget.data import as_positions

    check_model(model, supported=FISHER_CLASSES, task="the Fisher information")
    check_choice(estimator, _ESTIMATORS, "estimator")
    check_choice(loss, _LOSSES, "loss")
    check_choice(engine, _ENGINES, "engine")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    return_gradient = check_bool(return_gradient, "return_gradient")
    progress_bar = check_bool(progress_bar, "progress_bar")
    seed = resolve_seed(seed)
    positions = as_positions(cells, model.adata.obs_names, argument="cells")
    check_counts(model, positions)

    module = model.module
    fn = elbo_per_cell if loss == "elbo" else reconstruction_per_cell
    batches = track(
        minibatches(model, positions, batch_size=batch_size, device=model.device),
        description="Fisher",
        disable=not progress_bar,
    )
    transform = _SampledCounts(module, seed) if estimator == "sampled" else None
    start = time.perf_counter()
    with seeded(seed):
        out = accumulate_square_gradients(
            module,
            batches,
            fn,
            estimator="per_batch" if estimator == "per_batch" else "per_sample",
            engine=engine,
            transform=transform,
            with_gradient=return_gradient,
        )
    return _result(
        *out, estimator=estimator, loss=loss, return_gradient=return_gradient, seconds=time.perf_counter() - start
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
        with seeded(self.seed + self.batch):
            self.batch += 1
            return sample_counts(self.module, tensors)
