"""How much forget and retain cells share Fisher information, per parameter category."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from scforget._core import check_int

from ._categories import CATEGORIES, block, categories, gather, gene_weight_name
from ._engine import DiagonalFisher, diagonal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec

#: Top-k fractions reported by the overlap tables.
TOP_FRACTIONS = (0.001, 0.01, 0.1)
_TOP_COLS = tuple(f"top_{f * 100:g}%" for f in TOP_FRACTIONS)


def statistics(forget: torch.Tensor, retain: torch.Tensor, damping: float) -> dict[str, float]:
    """Overlap statistics of two flattened diagonal Fishers (``damping`` added to both).

    Returns ``n_params``, ``cosine``, ``log_fisher_pearson`` (Pearson r of the log Fishers),
    ``top_0.1%``/``top_1%``/``top_10%`` (shared fraction of the k largest entries),
    ``eff_rank_forget``/``eff_rank_retain`` (effective rank ``exp(entropy(F/ΣF))`` as a fraction of
    the parameter count) and ``eff_rank_ratio`` (forget / retain).
    """
    n = int(forget.numel())
    out: dict[str, float] = {"n_params": n}
    if n == 0:
        return out
    f = forget.double() + damping
    r = retain.double() + damping
    out["cosine"] = float(f @ r / (f.norm() * r.norm()))
    lf, lr = f.log(), r.log()
    lf, lr = lf - lf.mean(), lr - lr.mean()
    denom = float(lf.norm() * lr.norm())
    out["log_fisher_pearson"] = float(lf @ lr) / denom if denom > 0 else float("nan")
    for frac, col in zip(TOP_FRACTIONS, _TOP_COLS, strict=True):
        k = max(1, round(frac * n))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.topk(f, k).indices] = True
        out[col] = float(mask[torch.topk(r, k).indices].sum()) / k
    er_f, er_r = _effective_rank(f), _effective_rank(r)
    out["eff_rank_forget"] = er_f / n
    out["eff_rank_retain"] = er_r / n
    out["eff_rank_ratio"] = er_f / er_r
    return out


def _effective_rank(x: torch.Tensor) -> float:
    p = x / x.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def complement(
    total: Mapping[str, torch.Tensor], n_total: int, part: Mapping[str, torch.Tensor], n_part: int
) -> dict[str, torch.Tensor]:
    """Mean Fisher of ``total``'s cells outside ``part`` (both per-cell means; ``part`` ⊂ ``total``)."""
    return {k: ((n_total * total[k] - n_part * part[k]) / (n_total - n_part)).clamp_min(0) for k in total if k in part}


def overlap_table(
    forget: Mapping[str, torch.Tensor],
    retain: Mapping[str, torch.Tensor],
    table: pd.DataFrame,
    *,
    damping: float,
    null_pairs: Sequence[tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]] = (),
    no_gradient: Sequence[str] = (),
    order: Sequence[str] = CATEGORIES,
) -> pd.DataFrame:
    """Statistics per category and globally (see :func:`statistics`), with null references.

    Parameters
    ----------
    forget, retain
        Diagonal Fishers keyed by parameter name; parameters missing from either are excluded.
    table
        A :func:`categories` table (or any table with ``parameter``, ``category``, ``col_start``,
        ``col_stop``, ``n_params``).
    damping
        Added to every Fisher value.
    null_pairs
        ``(F_a, F_b)`` pairs of the null reference; the table gains ``null_cosine`` (mean),
        ``null_cosine_sd``, ``null_log_fisher_pearson`` and ``null_top_1%``.
    no_gradient
        Parameters that received no gradient, counted in ``n_no_gradient``.
    order
        Category display order.
    """
    shared = {k for k in forget if k in retain}
    used = table[table["parameter"].isin(shared)]
    cats = ["global"] + [c for c in order if (used["category"] == c).any()]
    total_f = float(gather(forget, used).sum())
    total_r = float(gather(retain, used).sum())
    rows = {}
    for cat in cats:
        sel = None if cat == "global" else cat
        f, r = gather(forget, used, sel), gather(retain, used, sel)
        row = statistics(f, r, damping)
        sub = table if sel is None else table[table["category"] == sel]
        row["n_no_gradient"] = int(sub.loc[sub["parameter"].isin(no_gradient), "n_params"].sum())
        row["forget_mass"] = float(f.sum()) / total_f if total_f > 0 else float("nan")
        row["retain_mass"] = float(r.sum()) / total_r if total_r > 0 else float("nan")
        if null_pairs:
            nulls = [statistics(gather(a, used, sel), gather(b, used, sel), damping) for a, b in null_pairs]
            cos = np.array([x["cosine"] for x in nulls])
            row["null_cosine"] = float(cos.mean())
            row["null_cosine_sd"] = float(cos.std(ddof=1)) if len(cos) > 1 else float("nan")
            row["null_log_fisher_pearson"] = float(np.mean([x["log_fisher_pearson"] for x in nulls]))
            row["null_top_1%"] = float(np.mean([x["top_1%"] for x in nulls]))
        rows[cat] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "category"
    df["n_params"] = df["n_params"].astype(int)
    df["n_no_gradient"] = df["n_no_gradient"].astype(int)
    first = ["n_params", "n_no_gradient", "cosine", "log_fisher_pearson", *_TOP_COLS]
    return df[first + [c for c in df.columns if c not in first]]


@dataclass
class FisherOverlap:
    """Forget/retain Fisher overlap of a model (the result of :func:`overlap`).

    Attributes
    ----------
    table
        One row per parameter category and ``"global"``: ``n_params`` (parameters with gradient),
        ``n_no_gradient`` (excluded parameters), ``cosine``, ``log_fisher_pearson``, top-k overlaps,
        effective-rank fractions and ratio, each category's share of the total Fisher mass
        (``forget_mass``, ``retain_mass``) and the null reference (``null_cosine`` etc.): the
        same statistic between a random retain subset of the forget set's size and the rest of the
        retain set, which is what "high" means for a set of that size.
    per_tensor
        The same statistics per parameter block (no null).
    per_gene
        Per gene: cosine of the forget and retain Fisher of the gene's row of the decoder's mean
        output weight, the gene's share of each Fisher's mass and their ratio.
    forget, retain
        The two :class:`DiagonalFisher` results.
    categories
        The :func:`categories` table used.
    damping
        Damping added to every Fisher value.
    null
        Description of the null reference.
    model
        The model's class, for plot titles.
    """

    table: pd.DataFrame
    per_tensor: pd.DataFrame
    per_gene: pd.DataFrame
    forget: DiagonalFisher
    retain: DiagonalFisher
    categories: pd.DataFrame
    damping: float
    null: str = ""
    null_fishers: list = field(default_factory=list, repr=False)
    model: str = "model"

    def to_df(self) -> pd.DataFrame:
        """The category table."""
        return self.table

    def plot_scatter(
        self,
        *,
        categories: Sequence[str] | None = None,
        max_points: int = 20_000,
        seed: int | None = None,
        **kwargs: Any,
    ):
        """Scatter of log10 forget vs retain Fisher, one panel per category (see :func:`scforget.pl.fisher_scatter`).

        Parameters
        ----------
        categories
            Categories to show (default: all present).
        max_points
            Points drawn per panel (a random subset).
        seed
            Seed of the subset; ``None`` follows :attr:`scvi.settings.seed`.
        **kwargs
            ``title``, ``show`` and ``save`` of :func:`scforget.pl.fisher_scatter`.

        Returns
        -------
        The list of Axes, unless the figure was shown.
        """
        from scforget import pl
        from scforget._core import check_int, resolve_seed

        cats = [c for c in self.table.index if c != "global"] if categories is None else list(categories)
        unknown = [c for c in cats if c not in self.table.index]
        if unknown:
            raise ValueError(f"Unknown categories {unknown}; available: {list(self.table.index)}.")
        max_points = check_int(max_points, "max_points", minimum=1)
        rng = np.random.default_rng(resolve_seed(seed))
        used = self.categories[self.categories["parameter"].isin(set(self.forget) & set(self.retain))]
        frames = []
        for cat in cats:
            f = gather(self.forget, used, cat).numpy() + self.damping
            r = gather(self.retain, used, cat).numpy() + self.damping
            if f.size > max_points:
                idx = rng.choice(f.size, max_points, replace=False)
                f, r = f[idx], r[idx]
            frames.append(pd.DataFrame({"category": cat, "forget": f, "retain": r}))
        kwargs.setdefault("title", f"Fisher of forget vs retain cells: {self.model}")
        return pl.fisher_scatter(pd.concat(frames, ignore_index=True), cosines=self.table["cosine"], **kwargs)

    def plot_categories(self, **kwargs: Any):
        """Forget/retain cosine per category with the null reference (see :func:`scforget.pl.fisher_categories`).

        Keyword arguments (``title``, ``ax``, ``show``, ``save``) go to :func:`scforget.pl.fisher_categories`.
        """
        from scforget import pl

        kwargs.setdefault("title", f"Forget/retain Fisher overlap: {self.model}")
        return pl.fisher_categories(self.table, **kwargs)


def _per_tensor(forget, retain, table: pd.DataFrame, damping: float) -> pd.DataFrame:
    rows = []
    for row in table.itertuples():
        f, r = block(forget, row), block(retain, row)
        if f is None or r is None:
            continue
        stats = statistics(f, r, damping)
        rows.append({"parameter": row.parameter, "category": row.category, "col_start": row.col_start, **stats})
    return pd.DataFrame(rows)


def _per_gene(model: BaseModelClass, forget, retain, damping: float) -> pd.DataFrame:
    name = gene_weight_name(model.module, model.adata.n_vars, {k: 1 for k in forget if k in retain})
    if name is None:
        return pd.DataFrame(columns=["cosine", "forget_mass", "retain_mass", "mass_ratio"])
    f, r = forget[name] + damping, retain[name] + damping
    cos = (f * r).sum(1) / (f.norm(dim=1) * r.norm(dim=1))
    fm, rm = f.sum(1) / f.sum(), r.sum(1) / r.sum()
    return pd.DataFrame(
        {"cosine": cos.numpy(), "forget_mass": fm.numpy(), "retain_mass": rm.numpy(), "mass_ratio": (fm / rm).numpy()},
        index=pd.Index(model.adata.var_names, name="gene"),
    )


def overlap(
    model: BaseModelClass,
    forget: CellSpec,
    retain: CellSpec | None = None,
    *,
    damping: float = 1e-8,
    null: Literal["random"] | CellSpec | None = "random",
    n_null: int = 5,
    estimator: Literal["per_sample", "per_batch", "sampled"] = "per_sample",
    loss: Literal["elbo", "reconstruction"] = "elbo",
    batch_size: int = 128,
    seed: int | None = None,
    progress_bar: bool = True,
) -> FisherOverlap:
    """Compare the diagonal Fisher of forget and retain cells, per parameter category.

    A selective parameter edit (SSD, Fisher forgetting) can only remove what the forget cells
    taught the model if their Fisher information sits in different parameters from the retain
    cells'. This function measures that overlap with the per-sample empirical Fisher of
    :func:`diagonal` (same estimator, damping and eval mode for both sets), per category of
    :func:`categories` and globally, and sets it against a null reference: the same statistic
    between a random subset of the retain cells as large as the forget set and the remaining retain
    cells. A forget set whose cosine is close to the null is, as far as the parameters can tell, an
    ordinary sample of the training data.

    Parameters
    ----------
    model
        A trained :class:`~scvi.model.SCVI`, :class:`~scvi.model.CondSCVI` or :class:`~scvi.model.SCANVI`
        (or a scforget subclass).
    forget
        The forget cells.
    retain
        The retain cells; defaults to the model's training cells not in ``forget``.
    damping
        Added to both Fishers before every statistic (default as in the reference study).
    null
        ``"random"``: ``n_null`` random retain subsets of the forget set's size, each compared
        with the rest of the retain set. A cell specification: that group (e.g. another rare cell
        type) compared with the retain cells outside it. ``None``: no null reference.
    n_null
        Number of random subsets for ``null="random"``.
    estimator
        Fisher estimator (see :func:`diagonal`).
    loss
        Per-cell loss (see :func:`diagonal`).
    batch_size
        Minibatch size of the Fisher computations.
    seed
        Seed of the random null subsets (and of sampled counts); ``None`` follows :attr:`scvi.settings.seed`.
    progress_bar
        Show progress bars.

    Returns
    -------
    A :class:`FisherOverlap` with ``.table``, ``.per_tensor``, ``.per_gene`` and plots.

    Examples
    --------
    >>> ov = scforget.fisher.overlap(model, split.forget, split.retain)
    >>> ov.table[["cosine", "null_cosine"]]
    >>> ov.plot_categories()
    """
    from scforget._core import FISHER_CLASSES, check_model, check_number, resolve_seed, training_positions
    from scforget.data import as_positions

    check_model(model, supported=FISHER_CLASSES, task="the Fisher information")
    damping = check_number(damping, "damping", minimum=0)
    n_null = check_int(n_null, "n_null", minimum=1)
    seed = resolve_seed(seed)
    names = model.adata.obs_names
    f_pos = as_positions(forget, names, argument="forget")
    r_pos = (
        np.setdiff1d(training_positions(model), f_pos)
        if retain is None
        else as_positions(retain, names, argument="retain")
    )
    both = np.intersect1d(f_pos, r_pos)
    if both.size:
        raise ValueError(f"{both.size} cell(s) are in both `forget` and `retain`; the sets must be disjoint.")
    if r_pos.size == 0:
        raise ValueError("`retain` is empty.")
    null_pos = None
    if isinstance(null, str):
        if null != "random":
            raise ValueError(f"`null` must be 'random', a set of cells, or None; got {null!r}.")
        if r_pos.size < 2 * f_pos.size:
            raise ValueError(
                f"The random null needs at least twice as many retain cells ({r_pos.size}) as forget cells "
                f"({f_pos.size}); pass null=None."
            )
    elif null is not None:
        null_pos = as_positions(null, names, argument="null")
        if np.intersect1d(null_pos, f_pos).size:
            raise ValueError("The `null` group overlaps the forget cells; pick a group of retain cells.")
    kw = {"estimator": estimator, "loss": loss, "batch_size": batch_size, "seed": seed, "progress_bar": progress_bar}
    f_fisher = diagonal(model, f_pos, **kw)
    r_fisher = diagonal(model, r_pos, **kw)
    null_pairs, null_fishers, description = [], [], "none"
    if isinstance(null, str):
        rng = np.random.default_rng(seed)
        for _ in range(int(n_null)):
            sub = np.sort(rng.choice(r_pos, size=f_pos.size, replace=False))
            fs = diagonal(model, sub, **kw)
            null_pairs.append((fs, complement(r_fisher, r_fisher.n_cells, fs, fs.n_cells)))
            null_fishers.append(fs)
        description = f"{n_null} random retain subsets of {f_pos.size} cells vs the rest of the retain set"
    elif null_pos is not None:
        fs = diagonal(model, null_pos, **kw)
        inside = np.intersect1d(null_pos, r_pos)
        if inside.size == null_pos.size:
            rest = complement(r_fisher, r_fisher.n_cells, fs, fs.n_cells)
        else:
            rest = diagonal(model, np.setdiff1d(r_pos, null_pos), **kw)
        null_pairs.append((fs, rest))
        null_fishers.append(fs)
        description = f"a given group of {null_pos.size} cells vs the other retain cells"
    table = categories(model)
    no_grad = sorted(set(f_fisher.no_gradient) | set(r_fisher.no_gradient))
    return FisherOverlap(
        table=overlap_table(f_fisher, r_fisher, table, damping=damping, null_pairs=null_pairs, no_gradient=no_grad),
        per_tensor=_per_tensor(f_fisher, r_fisher, table, damping),
        per_gene=_per_gene(model, f_fisher, r_fisher, damping),
        forget=f_fisher,
        retain=r_fisher,
        categories=table,
        damping=float(damping),
        null=description,
        null_fishers=null_fishers,
        model=type(model).__name__,
    )
