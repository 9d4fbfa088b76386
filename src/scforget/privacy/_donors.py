"""Donor-level membership: aggregate cell scores to donors and ask whether a donor was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np
import pandas as pd

from . import _metrics as M

#: Donors needed on each side (members, non-members) before a bootstrap interval is reported.
MIN_DONORS_CI = 10


def donor_table(per_cell: pd.DataFrame, key: str, attacks: Sequence[str]) -> pd.DataFrame:
    """One row per donor: ``member`` (bool), ``n_cells`` and the mean cell score of each attack."""
    grouped = per_cell.groupby(key, observed=True, sort=True)
    out = grouped[list(attacks)].mean()
    out.insert(0, "n_cells", grouped.size())
    out.insert(0, "member", grouped["label"].first().astype(bool))
    out.index.name = key
    return out


def smallest_p(n_members: int, n_nonmembers: int) -> float:
    """The smallest one-sided p-value a rank test can give with these donor counts: ``1 / C(n, n_members)``."""
    if n_members == 0 or n_nonmembers == 0:
        return 1.0
    return 1.0 / comb(n_members + n_nonmembers, n_members)


def donor_summary(table: pd.DataFrame, attacks: Sequence[str], *, n_bootstrap: int, seed: int) -> pd.DataFrame:
    """AUC over donors per attack with a CI (enough donors), an exact rank-test p-value and a note."""
    y = table["member"].to_numpy(dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    min_p = smallest_p(n1, n0)
    rows = []
    for a in attacks:
        s = table[a].to_numpy(dtype=np.float64)
        row = {
            "auc": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p_value": np.nan,
            "min_p": min_p,
            "n_member_donors": n1,
            "n_nonmember_donors": n0,
            "note": "",
        }
        if n1 == 0 or n0 == 0:
            row["note"] = "needs donors on both sides (members and non-members)"
            rows.append(row)
            continue
        enough = min(n1, n0) >= MIN_DONORS_CI
        auc, lo, hi = M.auc_with_ci(s, y, n_bootstrap=n_bootstrap if enough else 0, seed=seed)
        p = M.auc_p_value(s, y)
        notes = []
        if not enough:
            notes.append(
                f"too few donors for an interval ({n1} member and {n0} non-member donors; {MIN_DONORS_CI} each needed)"
            )
        if min_p > 0.05:
            notes.append(f"no result can reach p < 0.05 with these donors (smallest possible p = {min_p:.2g})")
        row.update(auc=auc, ci_low=lo, ci_high=hi, p_value=p, note="; ".join(notes))
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(list(attacks), name="attack"))
