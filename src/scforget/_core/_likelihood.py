"""Count likelihoods of scvi-tools decoders, per cell."""

from __future__ import annotations

import torch


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative binomial log-probability summed over genes (mean ``mu``, inverse dispersion ``theta``).

    The same value as scvi-tools' ``NegativeBinomial.log_prob(x).sum(-1)``, computed faster: the
    count-dependent terms vanish where ``x == 0`` (``lgamma(x + theta) - lgamma(theta)`` and
    ``lgamma(x + 1)``), and so do their gradients, so they are evaluated on the non-zero entries
    only. Single-cell counts are mostly zeros and ``lgamma``/``digamma`` dominate the cost otherwise.
    Differentiable in ``mu`` and ``theta``.
    """
    if theta.shape != mu.shape:
        theta = theta.expand_as(mu)
    log_theta_mu = torch.log(theta + mu + eps)
    res = (theta * (torch.log(theta + eps) - log_theta_mu)).sum(-1)
    rows, cols = torch.nonzero(x, as_tuple=True)
    xs, ts = x[rows, cols], theta[rows, cols]
    nz = (
        xs * (torch.log(mu[rows, cols] + eps) - log_theta_mu[rows, cols])
        + torch.lgamma(xs + ts)
        - torch.lgamma(ts)
        - torch.lgamma(xs + 1)
    )
    return res.index_add(0, rows, nz.to(res.dtype))


def log_prob(px: torch.distributions.Distribution, x: torch.Tensor) -> torch.Tensor:
    """Per-cell log-likelihood of counts ``x`` under a decoder distribution ``px`` (summed over genes)."""
    if type(px).__name__ == "NegativeBinomial" and getattr(px, "mu", None) is not None:
        return nb_log_prob(x, px.mu, px.theta)
    return px.log_prob(x).sum(-1)
