"""Forget designs of a benchmark run: structured groups, scattered cells, donors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scforget._core import close_matches

if TYPE_CHECKING:
    from anndata import AnnData

    from scforget.data import ForgetSplit


@dataclass(frozen=True)
class ForgetDesign:
    """One forget design: what is forgotten and which cells are its non-members.

    Attributes
    ----------
    name
        Label of the design in the outputs (``"DC"``, ``"random:30"``, ``"donor:P3"``).
    kind
        ``"structured"`` (a group of ``label_key``: a random ``holdout_fraction`` of it is held out as
        same-biology non-members), ``"scattered"`` (random cells; as many random never-trained cells
        are the non-members) or ``"donor"`` (a donor of ``donor_key``: its training cells are
        forgotten and a ``holdout_fraction`` of its cells, set aside before training, are the
        non-members, plus every cell of the ``heldout_donors`` other donors set aside whole).
    value
        The group or donor, or the number of scattered cells.
    """

    name: str
    kind: str
    value: str | int

    def split(
        self,
        adata: AnnData,
        *,
        label_key: str,
        donor_key: str | None,
        holdout_fraction: float,
        seed: int,
        heldout_donors: int = 0,
    ) -> ForgetSplit:
        """The split of this design, decided before any training.

        For a donor design, ``heldout_donors`` other donors (drawn with ``seed``) are set aside whole
        before training: donors never trained on, whose cells join the non-members (``holdout``).
        """
        import scforget as sf
        from scforget.data import ForgetSplit

        if self.kind == "scattered":
            return sf.data.scattered_forget(adata, int(self.value), seed=seed)
        key = label_key if self.kind == "structured" else donor_key
        split = sf.data.structured_forget(adata, key, self.value, holdout_fraction=holdout_fraction, seed=seed)
        if self.kind != "donor" or not heldout_donors:
            return split
        donors = adata.obs[donor_key].astype(str).to_numpy()
        others = sorted(set(donors) - {str(self.value)})
        away_donors = np.random.default_rng(seed).choice(others, size=heldout_donors, replace=False)
        away = np.flatnonzero(np.isin(donors, away_donors))
        return ForgetSplit(
            forget=split.forget,
            holdout=np.union1d(split.holdout, away),
            retain=np.setdiff1d(split.retain, away),
            unseen=np.setdiff1d(split.unseen, away),
            validation=np.setdiff1d(split.validation, away),
            description=f"{split.description}; plus {heldout_donors} donor(s) never trained on as non-members",
        )


def parse_designs(
    specs: list[str], adata: AnnData, *, label_key: str, donor_key: str | None, heldout_donors: int = 0
) -> list[ForgetDesign]:
    """Designs from ``--forget`` values: ``GROUP``, ``random:N`` or ``donor:ID`` (checked against the data).

    ``heldout_donors`` (donors set aside whole as extra non-members of donor designs) must leave at
    least one other donor to train on.
    """
    if isinstance(heldout_donors, bool) or not isinstance(heldout_donors, int | np.integer) or heldout_donors < 0:
        raise ValueError(f"--heldout-donors must be a count >= 0; got {heldout_donors!r}.")
    out: list[ForgetDesign] = []
    labels = set(adata.obs[label_key].astype(str))
    for spec in specs:
        spec = str(spec)
        if spec.startswith("random:"):
            n = spec.split(":", 1)[1]
            if not n.isdigit() or int(n) < 2:
                raise ValueError(f"--forget {spec!r}: write random:N with N >= 2 cells, e.g. random:30.")
            if 2 * int(n) >= adata.n_obs:
                raise ValueError(
                    f"--forget {spec!r}: {n} cells and as many non-members exceed the {adata.n_obs} cells."
                )
            out.append(ForgetDesign(spec, "scattered", int(n)))
        elif spec.startswith("donor:"):
            if donor_key is None:
                raise ValueError(f"--forget {spec!r} needs --donor-key (the obs column of donors).")
            if donor_key not in adata.obs.columns:
                raise ValueError(
                    f"--donor-key {donor_key!r} is not an obs column of the data.{close_matches(donor_key, adata.obs.columns)}"
                )
            donor = spec.split(":", 1)[1]
            donors = set(adata.obs[donor_key].astype(str))
            if donor not in donors:
                raise ValueError(
                    f"--forget {spec!r}: no donor {donor!r} in {donor_key!r}.{close_matches(donor, donors)}"
                )
            if heldout_donors > len(donors) - 2:
                raise ValueError(
                    f"--heldout-donors {heldout_donors}: {donor_key!r} has {len(donors)} donors; besides {donor!r} at "
                    f"least one must stay in training, so pass at most {max(len(donors) - 2, 0)}."
                )
            out.append(ForgetDesign(spec, "donor", donor))
        else:
            if spec not in labels:
                raise ValueError(f"--forget {spec!r} is not a value of {label_key!r}.{close_matches(spec, labels)}")
            out.append(ForgetDesign(spec, "structured", spec))
    if len({d.name for d in out}) != len(out):
        raise ValueError("--forget lists a design twice.")
    if not out:
        raise ValueError("--forget is empty; name at least one design (e.g. DC, random:30, donor:ID).")
    return out
