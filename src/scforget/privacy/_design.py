"""Checks of an audit's design before any work: who was trained on, same biology, fair references."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from scforget import _compat
from scforget._core import training_positions, validation_positions, warn

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model.base import BaseModelClass

#: Composition differences that warn: a chi-square test this significant and a total variation this large.
COMPOSITION_P = 1e-3
COMPOSITION_TVD = 0.1


def audit_view(model: BaseModelClass, adata: AnnData) -> AnnData:
    """A copy of ``adata`` holding the model's genes in the model's order (the caller's object is not changed)."""
    genes = _compat.registered_var_names(model)
    if genes is None:
        genes = model.adata.var_names
    genes = pd.Index(genes)
    missing = genes.difference(adata.var_names)
    if missing.size:
        raise ValueError(
            f"`adata` lacks {missing.size} of the model's {genes.size} genes (e.g. {', '.join(map(str, missing[:3]))}); "
            "the model can only score cells measured on its genes."
        )
    if not adata.obs_names.is_unique:
        raise ValueError("`adata` has duplicated obs names; make them unique (adata.obs_names_make_unique()).")
    return adata[:, genes].copy()


def training_status(view: BaseModelClass, model: BaseModelClass) -> None:
    """Give ``view`` (a model on another AnnData) the model's train/validation/test cells, matched by obs name."""
    own = model.adata.obs_names
    names = view.adata.obs_names

    def mapped(positions: np.ndarray | None) -> np.ndarray:
        if positions is None:
            return np.zeros(0, dtype=np.int64)
        idx = names.get_indexer(own[np.asarray(positions, dtype=np.int64)])
        return np.sort(idx[idx >= 0]).astype(np.int64)

    view.train_indices = mapped(training_positions(model))
    view.validation_indices = mapped(validation_positions(model))
    view.test_indices = mapped(getattr(model, "test_indices", None))
    view._scforget_known = names.isin(own)  # which audited cells the model's AnnData holds at all


def check_membership(target: BaseModelClass, members: np.ndarray, nonmembers: np.ndarray) -> dict:
    """Members must have been trained on and non-members must not, as far as the model can tell.

    A model records its training cells; an unlearned one no longer lists the cells it forgot, which
    then look like held-out cells, so for it members outside the training set are accepted unless
    they are validation cells or cells its AnnData never held.
    """
    n = target.adata.n_obs
    train = np.zeros(n, dtype=bool)
    train[training_positions(target)] = True
    val = np.zeros(n, dtype=bool)
    val[validation_positions(target)] = True
    known = getattr(target, "_scforget_known", np.ones(n, dtype=bool))
    unlearned = bool(getattr(target, "unlearning_records_", None))
    trained_non = int(train[nonmembers].sum())
    if trained_non:
        raise ValueError(
            f"{trained_non} of the {nonmembers.size} `nonmembers` are training cells of the model, so the audit would "
            "compare members with members. Pass cells the model never trained on (e.g. held-out cells, or "
            "nonmembers=None for the model's own held-out cells)."
        )
    never = ~train[members]
    if unlearned:
        never &= val[members] | ~known[members]
    if never.any():
        why = "" if unlearned else " (and it was never unlearned, so none of them can be forgotten cells)"
        raise ValueError(
            f"{int(never.sum())} of the {members.size} `members` were never training cells of the model{why}: an "
            "attack cannot find membership that is not there. Pass the cells it trained on (or was asked to forget); "
            "for a deliberate null audit of a model that never saw them, pass design_checks=False."
        )
    return {"members_checked": "training cells" if not unlearned else "training or forgotten cells"}


def check_composition(obs: pd.DataFrame, key: str, members: np.ndarray, nonmembers: np.ndarray) -> dict | None:
    """Warn when members and non-members differ in their ``key`` composition (it, not membership, would be detected)."""
    labels = obs[key].astype(str).to_numpy()
    table = pd.crosstab(
        pd.Series(labels[np.concatenate([members, nonmembers])], name=key),
        pd.Series(np.r_[np.ones(members.size), np.zeros(nonmembers.size)].astype(int), name="member"),
    )
    if table.shape[0] < 2:
        return None
    share = table / table.sum(0)
    tvd = float(0.5 * (share[1] - share[0]).abs().sum()) if {0, 1} <= set(table.columns) else 0.0
    p = float(stats.chi2_contingency(table.to_numpy())[1]) if {0, 1} <= set(table.columns) else 1.0
    result = {"key": key, "total_variation": tvd, "chi2_p": p}
    if p < COMPOSITION_P and tvd > COMPOSITION_TVD:
        top = (share[1] - share[0]).abs().sort_values(ascending=False).index[:3]
        detail = "; ".join(
            f"{g}: {share.loc[g, 1]:.0%} of members vs {share.loc[g, 0]:.0%} of non-members" for g in top
        )
        warn(
            f"Members and non-members differ in {key!r} composition (total variation {tvd:.2f}, chi-square p = {p:.1e}; "
            f"{detail}). An attack would detect the composition, not membership. Use matched=True (non-members "
            f"matched to each member's neighbourhood) or non-members of the same {key!r} mix."
        )
        result["warned"] = True
    return result


def architecture_mismatch(ref: BaseModelClass, model: BaseModelClass) -> str | None:
    """How ``ref`` differs from ``model`` in class or constructor arguments (``None`` when it does not)."""
    if type(ref).__name__ != type(model).__name__:
        return f"{type(ref).__name__} vs {type(model).__name__}"

    def flat(m) -> dict:
        init = getattr(m, "init_params_", None) or {}
        out = dict(init.get("non_kwargs", {}))
        for group in init.get("kwargs", {}).values():
            out.update(group or {})
        return out

    a, b = flat(ref), flat(model)
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}={a.get(k)!r} vs {b.get(k)!r}" for k in differ) or None


def check_reference(ref: BaseModelClass, i: int, model: BaseModelClass, member_names: pd.Index) -> None:
    """A reference model must share the genes and the architecture, and must not have trained on a member."""
    genes, own = _compat.registered_var_names(ref), _compat.registered_var_names(model)
    if genes is not None and own is not None and list(genes) != list(own):
        raise ValueError(
            f"`reference_models[{i}]` was set up on other genes than the audited model; it cannot be its reference."
        )
    what = architecture_mismatch(ref, model)
    if what:
        raise ValueError(
            f"`reference_models[{i}]` differs from the audited model ({what}); references need its architecture."
        )
    trained = ref.adata.obs_names[training_positions(ref)]
    n = int(pd.Index(trained).isin(member_names).sum())
    if n:
        raise ValueError(
            f"`reference_models[{i}]` trained on {n} of the members; an OUT reference must never have seen them "
            "(e.g. use models retrained without the members)."
        )


def check_donors(
    obs: pd.DataFrame, key: str, members: np.ndarray, nonmembers: np.ndarray, *, n_folds: int | None
) -> np.ndarray:
    """Every donor wholly member or non-member; enough donors per class for donor-grouped folds.

    Returns the donor of every obs as strings.
    """
    col = obs[key]
    if col.isna().to_numpy()[np.concatenate([members, nonmembers])].any():
        raise ValueError(f"`donor_key`={key!r} has missing values among the audited cells; label every cell's donor.")
    donors = col.astype(str).to_numpy()
    both = np.intersect1d(donors[members], donors[nonmembers])
    if both.size:
        raise ValueError(
            f"{both.size} donor(s) of `donor_key`={key!r} have cells among both members and non-members (e.g. "
            f"{', '.join(map(str, both[:3]))}); a donor-level audit needs each donor wholly in one set."
        )
    n1, n0 = np.unique(donors[members]).size, np.unique(donors[nonmembers]).size
    if n_folds is not None and min(n1, n0) < n_folds:
        raise ValueError(
            f"The classifier's {n_folds} folds keep each donor's cells together and need {n_folds} donors of each kind; "
            f"there are {n1} member and {n0} non-member donors. Lower `n_folds` (at least 2) or drop 'classifier' "
            "from `attacks`."
        )
    return donors
