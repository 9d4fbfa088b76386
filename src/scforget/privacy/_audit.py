"""audit(): per-cell signals -> attacks -> metrics -> AuditReport."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scforget import _compat
from scforget._core import (
    AUDIT_CLASSES,
    check_bool,
    check_choice,
    check_counts,
    check_fleet,
    check_int,
    check_model,
    close_matches,
    never_trained,
    quiet_setup,
    quiet_training,
    resolve_seed,
    seeded,
    training_positions,
)
from scforget.data import as_positions, matched_negatives

from . import _attacks as A
from . import _design as D
from . import _lira as L
from ._report import AuditReport, describe_model
from ._rmia import rmia_scores
from ._signals import KNN_SEARCHES, assemble, compute_raw

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec


def _check_attacks(attacks: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(attacks, str):
        attacks = (attacks,)
    out: list[str] = []
    for a in attacks:
        if a not in A.ATTACKS:
            raise ValueError(
                f"Unknown attack {a!r} in `attacks`.{close_matches(str(a), A.ATTACKS)} Available: {', '.join(A.ATTACKS)}."
            )
        if a not in out:
            out.append(a)
    if not out:
        raise ValueError(f"`attacks` is empty; choose from {', '.join(A.ATTACKS)}.")
    return tuple(out)


def audit(
    model: BaseModelClass,
    adata: AnnData | None = None,
    *,
    members: CellSpec,
    nonmembers: CellSpec | None = None,
    matched: bool = False,
    k: int = 10,
    knn_search: str = "auto",
    attacks: Sequence[str] = A.ATTACKS,
    classifier: str = "logistic",
    reference_models: Sequence[BaseModelClass] | None = None,
    n_reference: int = 8,
    reference_epochs: int | None = None,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    fleet: Any = None,
    n_folds: int = 5,
    n_bootstrap: int = 1000,
    seed: int | None = None,
    groupby: str | Sequence[str] | None = None,
    label_key: str | None = None,
    donor_key: str | None = None,
    design_checks: bool = True,
    include_names: bool = False,
    batch_size: int = 1024,
    progress_bar: bool = True,
) -> AuditReport:
    """Membership-inference audit: can an attacker tell ``members`` from ``nonmembers``?

    Per-cell signals are computed once (posterior mean, NB likelihood with the observed library
    size); each attack turns them into a score oriented so that higher means "member"; the
    summary reports AUC with a stratified bootstrap CI, advantage, TPR at low FPR and an
    empirical epsilon bound per attack.

    Attacks
        ``loss`` (NB log-likelihood threshold), ``kl`` (KL to the prior), ``classifier``
        (standardised signals and latent moments, stratified K-fold cross-fitting so every score is
        out-of-fold, class-balanced, refit for every audited model), ``distance`` (mean distance to
        the ``k`` nearest training cells outside the audited sets, in posterior-mean latent space),
        ``lira`` (Carlini et al. 2022: reference models of the same architecture and recipe trained
        on the model's other training cells plus a random half of the audited cells, per-cell
        Gaussian fits of the NB log-likelihood, variances pooled on the log scale; or user-supplied
        ``reference_models`` used as OUT models, offline mode), ``rmia`` (Zarifzadeh et al. 2024,
        offline, in log space: a cell's likelihood ratio to its mean likelihood under the reference
        models that never trained on it, compared with the ratios of the non-members of its
        ``label_key`` group; shares LiRA's reference models).

    Parameters
    ----------
    model
        A trained :class:`scvi.model.SCVI`, :class:`~scvi.model.CondSCVI`, :class:`~scvi.model.SCANVI`
        or :class:`~scvi.model.TOTALVI` (or a scforget subclass). It is not modified.
    adata
        The cells to audit: any AnnData holding the model's genes (raw counts), e.g. the model's own
        cells together with cells measured elsewhere. Its setup is transferred from the model the
        scvi-tools way, on a copy; ``members``, ``nonmembers`` and the ``groupby``/``label_key``
        columns then refer to it, and the model's training cells are matched by obs name. By
        default, the model's own AnnData. Required for a minified model (latent only, as on
        scvi-hub): its weights are loaded on these counts.
    members
        Cells that were trained on (or were to be forgotten). Checked before any work: they must be
        training cells of the model (for an unlearned model, training cells or cells outside its
        validation set, since it no longer lists the cells it forgot).
    nonmembers
        Cells never trained on (checked: none may be a training cell). Default: every cell outside
        the model's training and validation sets and ``members``. With ``matched=True`` this is the
        pool the matches are drawn from.
    matched
        Use as non-members the ``k`` nearest never-trained cells to each member in latent space
        (:func:`scforget.data.matched_negatives`).
    k
        Neighbours for matching and for the ``distance`` attack.
    knn_search
        The ``distance`` attack's search beyond 50,000 reference cells: ``"exact"`` (k-d tree),
        ``"approximate"`` (faiss' inverted-file index: faster for an atlas against itself) or
        ``"auto"`` (see :func:`scforget.privacy.signals`).
    attacks
        Attacks to run.
    classifier
        ``"logistic"`` (logistic regression) or ``"mlp"`` (small spectral-normalised MLP).
    reference_models
        Trained models on the same AnnData that never saw the audited cells (e.g. retrained
        models); used as LiRA's OUT models instead of training new ones.
    n_reference
        Reference models LiRA trains when ``reference_models`` is not given.
    reference_epochs
        Epochs per reference model; defaults to the model's recorded recipe.
    accelerator, devices
        Lightning accelerator and devices of the reference models' training.
    fleet
        A :class:`distributed.Client` (``pip install 'scforget[fleet]'``): the reference models train
        in parallel on its workers, e.g. ``Client(LocalCluster(n_workers=2, threads_per_worker=1))``
        on one machine or ``Client("tcp://scheduler:8786")`` on a cluster. Each worker receives the
        model and its AnnData once. The scores equal those of ``fleet=None`` (one model after
        another here) for the same seed, up to float32 summation order when the workers run torch
        on another number of threads than this process. scvi-tools settings changed in this
        process (:attr:`scvi.settings`) are not sent to the workers.
    n_folds
        Folds of the classifier's cross-fitting.
    n_bootstrap
        Bootstrap resamples for the AUC confidence intervals.
    seed
        Seed of folds, bootstrap, reference designs and reference training; ``None`` follows
        :attr:`scvi.settings.seed`. The caller's random state is left as it was.
    groupby
        ``adata.obs`` column(s) copied into the report for :meth:`AuditReport.by_group`.
    label_key
        ``adata.obs`` column of cell types (or any biology labels). RMIA draws each cell's
        population from the non-members with its label, and a warning names the labels whose share
        differs between members and non-members (chi-square p < 1e-3 and total variation > 0.1):
        an attack would detect that difference, not membership.
    donor_key
        ``adata.obs`` column of donors, for donor-level risk ("was this donor in the training set?",
        :meth:`AuditReport.donor_summary`). Every donor's audited cells must be all members or all
        non-members, and the classifier's folds keep each donor's cells together (else it would learn
        the donor, not membership).
    design_checks
        Refuse members the model never trained on and non-members it trained on (see ``members``).
        ``False`` skips that check, for deliberate null audits: a model trained without the members
        (e.g. a retrain reference built by hand) audited on them.
    include_names
        Index ``report.per_cell`` by obs names (default: anonymous integer ids).
    batch_size
        Cells per minibatch for the signals.
    progress_bar
        Show progress bars.

    Returns
    -------
    The :class:`AuditReport`.

    Examples
    --------
    >>> report = scforget.privacy.audit(model, members=split.forget, nonmembers=split.holdout)
    >>> report.summary()
    """
    # ---- validation, before any work ----
    minified = _compat.is_minified(model)
    if minified and adata is None:
        raise ValueError(
            "`model` is minified (its AnnData holds only the latent posterior, as on scvi-hub), and every attack "
            "scores a cell's counts. Pass the raw counts as `adata=` (any AnnData with the model's genes, e.g. the "
            "data it was trained on); the weights are then loaded on them."
        )
    check_model(model, supported=AUDIT_CLASSES, task="auditing", designs=("sharded",), allow_minified=minified)
    matched = check_bool(matched, "matched")
    design_checks = check_bool(design_checks, "design_checks")
    include_names = check_bool(include_names, "include_names")
    progress_bar = check_bool(progress_bar, "progress_bar")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = resolve_seed(seed)
    foreign = adata is not None and adata is not model.adata
    if foreign and getattr(model, "deletion_design", None) is not None:
        raise ValueError("Audit a model built for deletion on its own AnnData (leave `adata` unset).")
    view_data = D.audit_view(model, adata) if foreign else None
    attacks = _check_attacks(attacks)
    k = check_int(k, "k", minimum=1)
    check_choice(knn_search, KNN_SEARCHES, "knn_search")
    n_folds = check_int(n_folds, "n_folds", minimum=2)
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", minimum=0)
    check_choice(classifier, A.CLASSIFIERS, "classifier")
    fleet = check_fleet(fleet)
    with contextlib.ExitStack() as stack:
        stack.enter_context(quiet_setup())
        target = model
        if minified:
            target = stack.enter_context(_compat.unminified(model, view_data))
            D.training_status(target, model)
        elif foreign:
            target = stack.enter_context(_compat.model_on(model, view_data))
            D.training_status(target, model)
        design, info = _validate(
            model,
            target,
            stack,
            view_data,
            members=members,
            nonmembers=nonmembers,
            matched=matched,
            k=k,
            knn_search=knn_search,
            attacks=attacks,
            classifier=classifier,
            reference_models=reference_models,
            n_reference=n_reference,
            reference_epochs=reference_epochs,
            accelerator=accelerator,
            devices=devices,
            fleet=fleet,
            n_folds=n_folds,
            n_bootstrap=n_bootstrap,
            seed=seed,
            groupby=groupby,
            label_key=label_key,
            donor_key=donor_key,
            design_checks=design_checks,
            include_names=include_names,
            batch_size=batch_size,
            progress_bar=progress_bar,
        )
        with seeded(seed), quiet_training():
            return _run(target, design, info)


def _validate(model, target, stack, view_data, **a) -> tuple[_Design, dict]:
    """Every check of :func:`audit` that needs the cells; ``target`` is the model on the audited AnnData."""
    names = target.adata.obs_names
    obs = target.adata.obs
    attacks, n_folds, k, matched = a["attacks"], a["n_folds"], a["k"], a["matched"]
    groupby, label_key, donor_key = a["groupby"], a["label_key"], a["donor_key"]
    if groupby is None:
        groups: tuple[str, ...] = ()
    else:
        groups = (groupby,) if isinstance(groupby, str) else tuple(groupby)
    for g in groups:
        if g not in obs.columns:
            raise KeyError(f"`groupby`={g!r} is not a column of adata.obs.{close_matches(g, obs.columns)}")
        if g in (*A.ATTACKS, "label"):
            raise ValueError(f"`groupby` column {g!r} clashes with a report column; rename it.")
    for arg, key in (("label_key", label_key), ("donor_key", donor_key)):
        if key is not None and key not in obs.columns:
            raise KeyError(f"`{arg}`={key!r} is not a column of adata.obs.{close_matches(str(key), obs.columns)}")
    if donor_key is not None and donor_key in (*A.ATTACKS, "label"):
        raise ValueError(f"`donor_key` column {donor_key!r} clashes with a report column; rename it.")
    mem = as_positions(a["members"], names, argument="members")
    nonmembers = a["nonmembers"]
    if nonmembers is None:
        non = np.setdiff1d(never_trained(target), mem)
        if non.size == 0:
            raise ValueError(
                "No non-members are available: the model trained or validated on every cell outside `members` "
                "(scvi-tools' default split keeps no test cells). Pass `nonmembers=` with cells the model never saw: "
                "held-out cells of its AnnData, or cells of another AnnData passed as `adata=` with the model's genes."
            )
    else:
        non = as_positions(nonmembers, names, argument="nonmembers")
    overlap = np.intersect1d(mem, non)
    if overlap.size:
        raise ValueError(
            f"{overlap.size} cell(s) are both in `members` and `nonmembers`; the two sets must be disjoint."
        )
    info: dict = {
        "classifier": a["classifier"],
        "n_folds": n_folds,
        "k": k,
        "model": describe_model(model),
        "timings": {},
        "adata": "another AnnData (setup transferred)" if view_data is not None else "the model's own",
        "unlearned": bool(getattr(model, "unlearning_records_", None)),
    }
    if a["design_checks"]:
        info["design_checks"] = D.check_membership(target, mem, non)
    else:
        info["design_checks"] = "skipped (design_checks=False)"
    if label_key is not None and not matched:
        info["composition"] = D.check_composition(obs, label_key, mem, non)
    donors = None
    if donor_key is not None:
        if matched:
            raise ValueError("`donor_key` and `matched=True` do not combine: matching picks cells, not donors.")
        donors = D.check_donors(obs, donor_key, mem, non, n_folds=n_folds if "classifier" in attacks else None)
    need = n_folds if "classifier" in attacks else 1
    if not matched and (mem.size < need or non.size < need):
        raise ValueError(
            f"Too few cells: {mem.size} members and {non.size} non-members, but the classifier's {n_folds}-fold "
            f"cross-fitting needs at least {need} of each. Lower `n_folds` or audit larger sets."
        )
    if mem.size < need:
        raise ValueError(f"Too few members ({mem.size}) for {n_folds}-fold cross-fitting; lower `n_folds`.")
    train_idx = training_positions(target)
    # kNN reference: training cells outside the audited sets (matched non-members are never trained on)
    ref_pos = np.setdiff1d(train_idx, mem if matched else np.union1d(mem, non))
    if "distance" in attacks and ref_pos.size == 0:
        raise ValueError(
            "The `distance` attack measures distances to training cells outside `members` and `nonmembers`, and "
            "none is left: every training cell is audited. Audit part of the training cells as `members`, or drop "
            "'distance' from `attacks`."
        )
    epochs = None
    reference_models, n_reference = a["reference_models"], a["n_reference"]
    if any(x in A.REFERENCE_ATTACKS for x in attacks):
        if reference_models is not None:
            reference_models = list(reference_models)
            if not reference_models:
                raise ValueError("`reference_models` is empty; pass trained models or None to train references.")
            on_view = []
            for i, ref in enumerate(reference_models):
                check_model(ref, supported=AUDIT_CLASSES, task="auditing", argument=f"reference_models[{i}]")
                D.check_reference(ref, i, model, names[mem])
                if view_data is None:
                    if not ref.adata.obs_names.equals(names):
                        raise ValueError(
                            f"`reference_models[{i}]` is set up on different cells than the audited model; reference "
                            "models must share its AnnData (same obs_names in the same order), or pass `adata=`."
                        )
                    on_view.append(ref)
                else:
                    ref_view = stack.enter_context(_compat.model_on(ref, view_data.copy()))
                    D.training_status(ref_view, ref)
                    on_view.append(ref_view)
            reference_models = on_view
        else:
            n_reference = check_int(n_reference, "n_reference", minimum=1)
            epochs = L.reference_epochs_of(model, a["reference_epochs"])
    check_counts(target)  # every cell may be read: candidates, distance references, LiRA training sets
    design = _Design(
        members=mem,
        nonmembers=non,
        pool=nonmembers,
        matched=matched,
        k=k,
        knn_search=a["knn_search"],
        groups=groups,
        min_per_class=need,
        n_folds=n_folds,
        knn_reference=ref_pos,
        attacks=attacks,
        classifier=a["classifier"],
        reference_models=reference_models,
        n_reference=n_reference,
        reference_epochs=epochs,
        accelerator=a["accelerator"],
        devices=a["devices"],
        fleet=a["fleet"],
        seed=a["seed"],
        batch_size=a["batch_size"],
        progress_bar=a["progress_bar"],
        obs=obs,
        include_names=a["include_names"],
        n_bootstrap=a["n_bootstrap"],
        label_key=label_key,
        donor_key=donor_key,
        donors=donors,
    )
    return design, info


@dataclass(frozen=True)
class _Design:
    """The validated inputs of one audit."""

    members: np.ndarray
    nonmembers: np.ndarray
    pool: Any
    matched: bool
    k: int
    knn_search: str
    groups: tuple[str, ...]
    min_per_class: int
    n_folds: int
    knn_reference: np.ndarray
    attacks: tuple[str, ...]
    classifier: str
    reference_models: list | None
    n_reference: int
    reference_epochs: int | None
    accelerator: str
    devices: Any
    fleet: Any
    seed: int
    batch_size: int
    progress_bar: bool
    obs: pd.DataFrame
    include_names: bool
    n_bootstrap: int
    label_key: str | None = None
    donor_key: str | None = None
    donors: np.ndarray | None = None  # donor of every obs (as strings), when donor_key is set


def _run(model: BaseModelClass, d: _Design, info: dict) -> AuditReport:
    """The work of :func:`audit` once every input is validated (run seeded and quiet)."""
    mem, non, k, groups, n_folds, seed = d.members, d.nonmembers, d.k, d.groups, d.n_folds, d.seed
    names = model.adata.obs_names
    t0 = time.perf_counter()
    if d.matched:
        neg = matched_negatives(model, mem, pool=d.pool, k=k, groupby=groups[0] if groups else None)
        non = neg.positions
        overlap = np.intersect1d(mem, non)
        non = np.setdiff1d(non, overlap)
        info["matched"] = {
            "n_distinct": neg.n_distinct,
            "n_requested": neg.n_requested,
            "composition": None if neg.composition is None else neg.composition.to_dict(),
        }
        if non.size < d.min_per_class:
            raise ValueError(
                f"Matching found only {non.size} distinct non-members, fewer than the {d.min_per_class} that {n_folds}-fold "
                "cross-fitting needs; raise `k` or lower `n_folds`."
            )
    cand = np.union1d(mem, non)
    labels = np.isin(cand, mem).astype(np.int64)
    ref_pos = np.setdiff1d(d.knn_reference, cand)
    raw = compute_raw(model, cand, batch_size=d.batch_size, seed=seed, progress_bar=d.progress_bar)
    sig = assemble(
        model, cand, raw, ref_pos, k=k, include_latent=True, batch_size=d.batch_size, seed=seed, knn_search=d.knn_search
    )
    info["timings"]["signals_s"] = time.perf_counter() - t0

    scores: dict[str, np.ndarray] = {}
    cache: dict[str, Any] = {}
    for attack in d.attacks:
        t = time.perf_counter()
        if attack == "loss":
            scores[attack] = A.loss_scores(sig)
        elif attack == "kl":
            scores[attack] = A.kl_scores(sig)
        elif attack == "distance":
            scores[attack] = A.distance_scores(sig)
        elif attack == "classifier":
            s, folds = A.classifier_scores(
                A.classifier_features(sig),
                labels,
                n_folds=n_folds,
                seed=seed,
                kind=d.classifier,
                groups=None if d.donors is None else d.donors[cand],
            )
            scores[attack] = s
            info["folds"] = folds
        elif attack in A.REFERENCE_ATTACKS:
            ref_signal, design = _references(model, d, cand, info, cache)
            if attack == "lira":
                scores[attack], info["lira_mode"] = L.lira_scores(sig["recon_ll"].to_numpy(), ref_signal, design)
            else:
                out_mask = np.ones(ref_signal.shape, dtype=bool) if design is None else ~design
                groups_of = None if d.label_key is None else d.obs[d.label_key].astype(str).to_numpy()[cand]
                scores[attack] = rmia_scores(sig["recon_ll"].to_numpy(), ref_signal, out_mask, labels, groups_of)
        info["timings"][f"{attack}_s"] = time.perf_counter() - t

    per_cell = pd.DataFrame({"label": labels, **scores})
    for g in groups:
        per_cell[g] = d.obs[g].iloc[cand].to_numpy()
    if d.donor_key is not None and d.donor_key not in groups:
        per_cell[d.donor_key] = d.obs[d.donor_key].iloc[cand].to_numpy()
    per_cell.index = (
        pd.Index(names[cand].copy(), name="cell") if d.include_names else pd.RangeIndex(cand.size, name="id")
    )
    info["timings"]["total_s"] = time.perf_counter() - t0
    return AuditReport(
        per_cell=per_cell,
        attacks=d.attacks,
        n_bootstrap=d.n_bootstrap,
        seed=seed,
        groupby=groups,
        info=info,
        donor_key=d.donor_key,
        _positions=cand,
        _n_obs=model.adata.n_obs,
    )


def _references(model: BaseModelClass, d: _Design, cand: np.ndarray, info: dict, cache: dict):
    """Reference models' per-cell log-likelihoods and IN design (``None``: all OUT), built once per audit."""
    if "signal" not in cache:
        if d.reference_models is not None:
            refs, design = d.reference_models, None
            info["lira_references"] = "supplied"
        else:
            # LiRA's online mode wants IN and OUT fits of every cell; RMIA alone is offline: all OUT
            if "lira" in d.attacks:
                design = L.in_out_design(cand.size, d.n_reference, d.seed)
            else:
                design = np.zeros((d.n_reference, cand.size), dtype=bool)
            refs = L.train_reference_models(
                model,
                cand,
                design,
                epochs=d.reference_epochs,
                seed=d.seed,
                progress_bar=d.progress_bar,
                accelerator=d.accelerator,
                devices=d.devices,
                fleet=d.fleet,
            )
            info["lira_references"] = f"trained {d.n_reference} x {d.reference_epochs} epochs"
        cache["signal"] = L.reference_signal(refs, model, cand, batch_size=d.batch_size)
        cache["design"] = design
        info["n_reference"] = len(refs)
    return cache["signal"], cache["design"]
