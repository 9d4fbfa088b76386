"""The audit in plain words: one sentence per attack, one overall, and the caveats beside them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _metrics as M

if TYPE_CHECKING:
    from ._report import AuditReport


def _ci(row) -> str:
    if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
        return f"AUC {row['auc']:.2f}, 95% CI {row['ci_low']:.2f}-{row['ci_high']:.2f}"
    return f"AUC {row['auc']:.2f}, no interval (n_bootstrap=0)"


def attack_sentence(attack: str, row, *, unlearned: bool) -> str:
    """One sentence on one attack's result, with its CI and the chance level."""
    what = "the forgotten cells" if unlearned else "the members"
    d = row["direction"]
    if d == "undefined":
        return f"{attack}: not computed (no members or no non-members)."
    if d == "member":
        tpr = row["tpr_1pct"]
        extra = f"; at 1% false positives it finds {tpr:.0%} of them" if np.isfinite(tpr) else ""
        tail = "still look like training data" if unlearned else "can be told from cells the model never saw"
        return f"{attack}: {what} {tail} ({_ci(row)}; chance is 0.50{extra})."
    if d == "chance":
        return f"{attack}: no better than chance ({_ci(row)} includes the chance level 0.50)."
    if d == "over-unlearned":
        return (
            f"{attack}: the forgotten cells now look less like training data than cells the model never saw "
            f"({_ci(row)}; chance is 0.50): over-unlearning, which itself gives the deletion away."
        )
    return (
        f"{attack}: the members score below the non-members ({_ci(row)}; chance is 0.50). The model was never "
        "unlearned, so this is not over-unlearning: either the two sets differ in composition (e.g. rarer or harder "
        "cells among the members: the rarity confound; check with label_key= or matched=True), or this score "
        "separates members the other way round from the attack's assumption, which is a leak all the same."
    )


#: Level of the overall verdict, shared out over the attacks (Bonferroni).
LEVEL = 0.05


def overall_sentence(report: AuditReport) -> str:
    """The overall verdict: which attacks detect membership once the choice among attacks is paid for.

    An attack counts when its one-sided rank-test p-value is below ``LEVEL / n_attacks``, so under
    the null the overall verdict claims detection in at most 5% of audits, however many attacks ran
    (checked by simulation in the tests).
    """
    s = report.summary(full=True)
    n_att = len(s)
    n1, n0 = int(s["n_members"].iloc[0]), int(s["n_nonmembers"].iloc[0])
    sizes = f"{n1} members vs {n0} non-members"
    corrected = f" after correcting for {n_att} attacks" if n_att > 1 else ""
    p = s["p_value"].astype(float)
    leak = s[p < LEVEL / n_att]
    over = s[(s["direction"] == "over-unlearned") & ((1 - p) < LEVEL / n_att)]
    rev = s[(s["direction"] == "reversed") & ((1 - p) < LEVEL / n_att)]
    rev_txt = (
        f"; {', '.join(rev.index)} separate{'s' if len(rev) == 1 else ''} them in reverse (see above)"
        if len(rev)
        else ""
    )
    if len(leak):
        best = leak["auc"].astype(float).idxmax()
        what = "the forgotten cells are still recognisable" if report.unlearned else "membership is detectable"
        eps = float(s.loc[best, "eps_lb"])
        eps_txt = f"; the data imply epsilon >= {eps:.2f} at 95% confidence" if eps > 0 else ""
        return (
            f"Overall: {what}: {len(leak)} of {n_att} attacks beat chance{corrected}, the strongest is {best} "
            f"(AUC {s.loc[best, 'auc']:.2f}{eps_txt}; {sizes}){rev_txt}."
        )
    if len(over):
        return (
            f"Overall: no attack finds the forgotten cells as members, but {len(over)} of {n_att} find them less "
            f"member-like than never-seen cells{corrected}: over-unlearning ({sizes})."
        )
    half = ((s["ci_high"] - s["ci_low"]).astype(float) / 2).to_numpy()
    if np.isfinite(half).any():
        res = f"; with {sizes}, an AUC beyond about 0.50 +/- {np.nanmax(half):.2f} would have been detected"
    else:
        res = f" ({sizes})"
    return f"Overall: no attack tells members from non-members better than chance{corrected}{res}{rev_txt}."


def donor_sentence(report: AuditReport) -> str:
    """The donor-level answer, with the strongest attack's p-value corrected for the choice among attacks."""
    ds = report.donor_summary()
    n_att = len(ds)
    if not ds["auc"].notna().any():
        r = ds.iloc[0]
        return f"Donors: not assessable ({int(r['n_member_donors'])} member and {int(r['n_nonmember_donors'])} non-member donors)."
    best = ds["p_value"].astype(float).idxmin()
    r = ds.loc[best]
    n1, n0 = int(r["n_member_donors"]), int(r["n_nonmember_donors"])
    p_adj = min(1.0, float(r["p_value"]) * n_att)
    ci = f", 95% CI {r['ci_low']:.2f}-{r['ci_high']:.2f}" if np.isfinite(r["ci_low"]) else ""
    p_txt = f"p = {r['p_value']:.2g}" + (f", {p_adj:.2g} after correcting for {n_att} attacks" if n_att > 1 else "")
    base = f"Donors: by {best}, member donors score above non-member donors with AUC {r['auc']:.2f}{ci} ({p_txt})"
    if r["min_p"] * n_att > LEVEL:
        return f"{base}; with {n1} member and {n0} non-member donors no test can reach significance: too few donors to say."
    if p_adj < LEVEL:
        return f"{base}: a donor's presence in the training set is detectable ({n1} member vs {n0} non-member donors)."
    return f"{base}: no evidence that a donor's presence is detectable ({n1} member vs {n0} non-member donors)."


def verdict(report: AuditReport) -> str:
    """The sentences of :meth:`AuditReport.verdict`, one per line."""
    s = report.summary()
    lines = [attack_sentence(a, s.loc[a], unlearned=report.unlearned) for a in report.attacks]
    lines.append(overall_sentence(report))
    if report.donor_key is not None:
        lines.append(donor_sentence(report))
    return "\n".join(lines)


def notes(report: AuditReport) -> list[str]:
    """Caveats that belong beside the numbers."""
    out: list[str] = []
    n0 = int((report.per_cell["label"] == 0).sum())
    for col, fpr in M.FPR_LEVELS.items():
        if not M.reachable(fpr, n0):
            out.append(
                f"{col} is NaN: a false-positive rate of {fpr:.1%} needs at least {int(round(1 / fpr))} non-members "
                f"(there are {n0})."
            )
    comp = report.info.get("composition")
    if comp and comp.get("warned"):
        out.append(
            f"Members and non-members differ in {comp['key']!r} composition (total variation "
            f"{comp['total_variation']:.2f}): attacks may detect the composition, not membership; use matched=True."
        )
    if str(report.info.get("design_checks", "")).startswith("skipped"):
        out.append("Design checks were skipped (design_checks=False): membership of the sets was not verified.")
    if report.donor_key is not None:
        note = report.donor_summary()["note"].iloc[0]
        if note:
            out.append(f"Donors: {note}.")
    return out
