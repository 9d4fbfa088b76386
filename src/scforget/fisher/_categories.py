"""Functional categories of the parameters of scvi-tools VAE modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Category names, in display order.
CATEGORIES = ("encoder", "bottleneck", "decoder_hidden", "decoder_output", "label_specific", "other")

_VAE_RULES = (
    ("z_encoder.encoder.", "encoder"),
    ("z_encoder.mean_encoder.", "bottleneck"),
    ("z_encoder.var_encoder.", "bottleneck"),
    ("l_encoder.encoder.", "encoder"),
    ("l_encoder.mean_encoder.", "bottleneck"),
    ("l_encoder.var_encoder.", "bottleneck"),
    ("decoder.px_decoder.", "decoder_hidden"),
    ("decoder.px_scale_decoder.", "decoder_output"),
    ("decoder.px_r_decoder.", "decoder_output"),
    ("decoder.px_dropout_decoder.", "decoder_output"),
    ("px_r", "decoder_output"),
    ("y_prior", "label_specific"),
)
_VAEC_RULES = (
    ("z_encoder.encoder.", "encoder"),
    ("z_encoder.mean_encoder.", "bottleneck"),
    ("z_encoder.var_encoder.", "bottleneck"),
    ("decoder.", "decoder_hidden"),
    ("px_decoder.", "decoder_output"),
    ("px_r", "decoder_output"),
    ("per_ct_bias", "label_specific"),
    ("prior_means", "label_specific"),
    ("prior_log_std", "label_specific"),
    ("prior_logits", "label_specific"),
)
#: FCLayers whose first categorical covariate is the cell-type label, per module class.
_LABEL_CONDITIONED = {
    "VAEC": ("",),  # every FCLayers of CondSCVI is conditioned on the label
    "SCANVAE": ("encoder_z2_z1.", "decoder_z1_z2."),
}


def _rules(module: nn.Module) -> tuple[tuple[str, str], ...]:
    return _VAEC_RULES if type(module).__name__ == "VAEC" else _VAE_RULES


def _base_category(module: nn.Module, name: str) -> str:
    for prefix, category in _rules(module):
        if name == prefix or name.startswith(prefix):
            return category
    return "other"


def _covariate_columns(module: nn.Module) -> dict[str, list[tuple[str, int, int]]]:
    """Covariate input columns of the linear layers inside scvi-tools' ``FCLayers``.

    ``FCLayers`` concatenates ``[x, continuous covariates, one-hot categorical covariates]`` before
    each linear layer that receives covariates. Returns, per weight name, the column ranges of the
    covariates with their category: the label one-hot of label-conditioned networks is
    ``"label_specific"``; batch and other covariates are ``"other"``.
    """
    from scvi.nn import FCLayers

    label_prefixes = _LABEL_CONDITIONED.get(type(module).__name__, ())
    out: dict[str, list[tuple[str, int, int]]] = {}
    for prefix, fc in module.named_modules():
        if not isinstance(fc, FCLayers) or fc.n_cov == 0:
            continue
        labelled = any((prefix + ".").startswith(p) for p in label_prefixes)
        n_cont = fc.n_cov - sum(fc.n_cat_list)
        for i, layers in enumerate(fc.fc_layers):
            if not fc.inject_into_layer(i):
                continue
            linear = next((m for m in layers if isinstance(m, nn.Linear)), None)
            if linear is None:
                continue
            lin_name = next(n for n, m in fc.fc_layers.named_modules() if m is linear)
            weight = f"{prefix}.fc_layers.{lin_name}.weight" if prefix else f"fc_layers.{lin_name}.weight"
            start = linear.in_features - fc.n_cov
            ranges = []
            if n_cont:
                ranges.append(("other", start, start + n_cont))
            start += n_cont
            for j, n_cat in enumerate(fc.n_cat_list):
                if n_cat:
                    ranges.append(("label_specific" if labelled and j == 0 else "other", start, start + n_cat))
                    start += n_cat
            out[weight] = ranges
    return out


def categories(model: Any) -> pd.DataFrame:
    """Assign every parameter (or column block of a parameter) of a VAE to a functional category.

    Categories: ``"encoder"`` (hidden layers of the encoders), ``"bottleneck"`` (the posterior
    mean and variance heads), ``"decoder_hidden"``, ``"decoder_output"`` (the per-gene output
    layers and the gene dispersion ``px_r``), ``"label_specific"`` (parameters used by one cell
    type only: CondSCVI's ``per_ct_bias`` and mixture-prior parameters, and the columns of every
    linear weight that multiply the cell-type one-hot input, which are split out of their layer),
    and ``"other"`` (batch embeddings, batch and covariate one-hot columns, SCANVI's classifier and
    latent hierarchy). Rules exist for scvi-tools' ``VAE`` (SCVI), ``VAEC`` (CondSCVI) and
    ``SCANVAE`` (SCANVI); anything unrecognised is ``"other"``.

    Parameters
    ----------
    model
        A scvi-tools model or its module.

    Returns
    -------
    One row per parameter block, with columns ``parameter``, ``category``, ``col_start`` and
    ``col_stop`` (the column range of a split weight; missing for a whole tensor), ``n_params``
    and ``shape``. Every parameter element appears in exactly one row.

    Examples
    --------
    >>> table = scforget.fisher.categories(model)
    >>> table.groupby("category")["n_params"].sum()
    """
    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        raise TypeError(f"`model` must be an scvi-tools model or torch module; got {type(model).__name__}.")
    split = _covariate_columns(module)
    rows = []
    for name, p in module.named_parameters():
        base = _base_category(module, name)
        shape = tuple(p.shape)
        if name in split and p.dim() == 2:
            ranges = split[name]
            first = min(s for _, s, _ in ranges)
            rows.append((name, base, 0, first, shape[0] * first, shape))
            for cat, s, e in ranges:
                rows.append((name, cat, s, e, shape[0] * (e - s), shape))
        else:
            rows.append((name, base, None, None, int(np.prod(shape, dtype=np.int64)), shape))
    table = pd.DataFrame(rows, columns=["parameter", "category", "col_start", "col_stop", "n_params", "shape"])
    table["col_start"] = table["col_start"].astype("Int64")
    table["col_stop"] = table["col_stop"].astype("Int64")
    table["category"] = pd.Categorical(table["category"], categories=list(CATEGORIES))
    return table


def block(values: Mapping[str, torch.Tensor], row: Any) -> torch.Tensor | None:
    """The flattened values of one row of a :func:`categories` table (``None`` if absent)."""
    v = values.get(row.parameter)
    if v is None:
        return None
    if pd.isna(row.col_start):
        return v.reshape(-1)
    return v[:, int(row.col_start) : int(row.col_stop)].reshape(-1)


def gather(values: Mapping[str, torch.Tensor], table: pd.DataFrame, category: str | None = None) -> torch.Tensor:
    """Concatenate the flattened values of one category (all rows if ``category`` is ``None``)."""
    rows = table if category is None else table[table["category"] == category]
    parts = [b for row in rows.itertuples() if (b := block(values, row)) is not None]
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat(parts)


def gene_weight_name(module: nn.Module, n_genes: int, available: Mapping[str, Any]) -> str | None:
    """Name of the decoder's per-gene mean output weight (rows = genes), if present in ``available``."""
    for name in ("decoder.px_scale_decoder.0.weight", "px_decoder.weight"):
        if name in available:
            return name
    for name, p in module.named_parameters():
        if (
            name in available
            and p.dim() == 2
            and p.shape[0] == n_genes
            and _base_category(module, name) == ("decoder_output")
        ):
            return name
    return None
