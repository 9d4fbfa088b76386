"""The benchmark protocol behind ``scforget benchmark``.

Baseline -> structured forget split decided before training -> every method over several seeds
-> utility and membership metrics per model -> one table. The retrain reference is trained with
the baseline's exact recipe on the retain cells only, over the same seeds, and its models double
as LiRA reference models so that nothing is trained twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scforget._core import fleet_client, from_payload, run_jobs

from ._config import BenchmarkConfig

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: ``--donor-key`` value that makes pseudo-donors when the data has no such column.
PSEUDO_DONOR = "pseudo_donor"


def prepare_data(config: BenchmarkConfig) -> AnnData:
    """Load the data, keep QC-passing cells, select highly variable genes on the raw counts."""
    import anndata as ad
    import scanpy as sc

    from scforget.datasets import pbmc3k

    adata = pbmc3k() if config.data is None else ad.read_h5ad(config.data)
    if config.label_key not in adata.obs.columns:
        raise KeyError(
            f"--label-key {config.label_key!r} is not an obs column of the data ({list(adata.obs.columns)})."
        )
    if "qc_pass" in adata.obs.columns:
        adata = adata[adata.obs["qc_pass"].to_numpy(dtype=bool)].copy()
    if config.donor_key == PSEUDO_DONOR and PSEUDO_DONOR not in adata.obs.columns:
        from scforget.data import pseudo_donors

        # data from one donor: random groups stand in for donors (they carry no donor effect)
        adata.obs[PSEUDO_DONOR] = pseudo_donors(
            adata, config.n_pseudo_donors, stratify_key=config.label_key, seed=config.split_seed
        )
    if config.n_top_genes and config.n_top_genes < adata.n_vars:
        sc.pp.filter_genes(adata, min_cells=3)
        sc.pp.highly_variable_genes(adata, n_top_genes=config.n_top_genes, flavor="seurat_v3")
        adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    return adata


@dataclass
class BenchmarkResult:
    """Results of a benchmark run.

    Attributes
    ----------
    runs
        One row per trained or unlearned model (design, method, baseline seed, seed) with every
        measured column.
    summary
        One row per (design, method): means over models, the pre-registered estimates, the retrain
        band, power and the target (:func:`~scforget.benchmark._summary.summarise`).
    config
        The configuration.
    timings
        Wall times of the stages, in seconds.
    scores
        Per-cell audit scores of every model (anonymous ids), keyed by (design, method, baseline
        seed, seed); kept in memory for figures, not written.
    preflight
        With ``config.preflight``: one row per design, the pre-flight check on its first baseline
        (:func:`~scforget.benchmark._preflight.preflight_row`); empty otherwise.
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    config: BenchmarkConfig
    timings: dict[str, float]
    scores: dict = field(default_factory=dict, repr=False)
    preflight: pd.DataFrame = field(default_factory=pd.DataFrame)

    def write(self, out: str | Path) -> list[Path]:
        """Write tables, ``config.json``, figures (``figures/*.png``) and ``report.html`` into ``out``."""
        from ._outputs import write_config, write_figures, write_report, write_tables

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = write_tables(self, out)
        paths.append(write_config(self, out / "config.json"))
        figures = write_figures(self, out / "figures")
        paths.append(write_report(self, figures, out / "report.html"))
        return paths + figures

    def describe(self) -> str:
        """The run in words: data, designs, model, seeds, and what the columns mean."""
        cfg = self.config
        quick = (
            f" Quick mode: {len(cfg.seeds)} unlearning seed(s) and {len(cfg.retrain_seeds)} retrain seeds; its "
            "intervals are indicative only."
            if cfg.quick
            else ""
        )
        donors = ""
        if any(str(f).startswith("donor:") for f in cfg.forget):
            pseudo = " (pseudo-donors: random groups of one donor's cells, no donor effect)"
            donors = f" Donors: {cfg.donor_key}" + (pseudo if cfg.donor_key == PSEUDO_DONOR else "")
            if cfg.heldout_donors:
                donors += f"; {cfg.heldout_donors} other donor(s) set aside whole as extra non-members"
            donors += "."
        return (
            f"Data: {cfg.data or 'bundled pbmc3k'}; designs: {', '.join(cfg.forget)} ({cfg.label_key}; holdout "
            f"fraction {cfg.holdout_fraction}).{donors} scVI n_hidden={cfg.n_hidden}, n_latent={cfg.n_latent}, "
            f"{cfg.epochs} training epochs; baseline seeds {cfg.baseline_seeds}, retrain seeds "
            f"{cfg.retrain_seeds}, unlearning seeds {cfg.seeds}.{quick}\n"
            f"Primary attack: {cfg.primary_attack} (pre-registered); advantage = 2|AUC - 0.5| per model, mean over "
            "models, hierarchical bootstrap over baseline seeds, unlearning seeds and cells; the retrain band is "
            "the retrain models' interval. The best attack is chosen on the baseline. A design is informative "
            "when the baseline lies above the retrain band. Target: inside the band under the primary and the "
            f"best attack, held-out NLL within 2% of retrain, time <= 0.2x one retrain.\n"
            f"Deletion designs: the forget set is one donor and the other cells {cfg.n_pseudo_donors} pseudo-donors "
            f"(random groups). SISA: {cfg.sisa_shards} shards x {cfg.sisa_slices} slices; adapters: half the "
            "pseudo-donors form the core; DP-SGD at epsilon "
            f"{', '.join(f'{e:g}' for e in cfg.dp_epsilons)}" + (f", {cfg.dp_epochs} epochs." if cfg.dp_epochs else ".")
        )

    def to_markdown(self) -> str:
        """The summary as a Markdown table, with the configuration."""
        from ._summary import KEY_COLUMNS

        cols = [c for c in KEY_COLUMNS if c in self.summary.columns]
        table = _markdown(self.summary[cols].reset_index())
        note = "All columns (every utility measure, per-attack AUCs, permutation p-values) are in summary.csv."
        return "# scforget benchmark\n\n" + self.describe().replace("\n", "\n\n") + f"\n\n{table}\n\n{note}\n"


def _markdown(df: pd.DataFrame) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.4g}"
        return str(v)

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _latent_accuracy(model, train_idx: np.ndarray, test_idx: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Accuracy of a logistic regression predicting cell type from posterior means (train on retain, test on unseen)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    fit_idx = rng.choice(train_idx, size=min(2000, train_idx.size), replace=False)
    z_fit = model.get_latent_representation(indices=fit_idx)
    z_test = model.get_latent_representation(indices=test_idx)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(z_fit, labels[fit_idx])
    return float(clf.score(z_test, labels[test_idx]))


def _audit_columns(model, split, references: list, config: BenchmarkConfig, seed: int) -> tuple[dict[str, Any], Any]:
    """Audit one model on the design's forget vs holdout cells; its summary columns and the report."""
    from scforget.privacy import audit
    from scforget.privacy._design import architecture_mismatch

    # LiRA needs references trained like the audited model: the retrain models qualify only for the
    # baseline's architecture (not for an ensemble, an adapter model or a LayerNorm DP-SGD model)
    references = [r for r in references if architecture_mismatch(r, model) is None]
    attacks = ["loss", "kl", "classifier", "distance"] + (["lira"] if references else [])
    report = audit(
        model,
        members=split.forget,
        nonmembers=split.holdout,
        attacks=tuple(attacks),
        reference_models=references or None,
        n_folds=min(5, len(split.forget), len(split.holdout)),
        n_bootstrap=config.n_bootstrap,
        seed=seed,
        progress_bar=False,
    )
    summary = report.summary(full=True)
    out: dict[str, Any] = {}
    for attack in summary.index:
        out[f"auc_{attack}"] = float(summary.loc[attack, "auc"])
    return out, report


def baseline_recipe(config: BenchmarkConfig) -> dict[str, Any]:
    """The training recipe of a run's baselines and retrains, as it enters the cache keys."""
    return {
        "epochs": config.epochs,
        "n_hidden": config.n_hidden,
        "n_latent": config.n_latent,
        "gene_likelihood": "nb",
        "accelerator": config.accelerator,
    }


def design_split(design, adata: AnnData, config: BenchmarkConfig):
    """A design's split as the run uses it: the design's roles, then ``calibration_fraction`` of its non-members carved."""
    split = design.split(
        adata,
        label_key=config.label_key,
        donor_key=config.donor_key,
        holdout_fraction=config.holdout_fraction,
        seed=config.split_seed,
        heldout_donors=config.heldout_donors,
    )
    if config.calibration_fraction and split.holdout.size >= 2:
        split = split.carve_calibration(config.calibration_fraction, seed=config.split_seed)
    return split


def unlearner_cells(spec, split) -> dict[str, np.ndarray]:
    """Never-trained cells handed to a method: the split's calibration cells, to methods that take them.

    Raises if any of them is an audit cell (a forget cell or a non-member), so an unlearner can never
    tune itself on the cells it is judged on; the audit's non-members are ``split.holdout``.
    """
    if "calibration" not in spec.params or split.calibration.size == 0:
        return {}
    audited = np.union1d(split.forget, split.holdout)
    overlap = np.intersect1d(split.calibration, audited)
    if overlap.size:
        raise RuntimeError(
            f"{overlap.size} calibration cell(s) of the split are audit cells; the benchmark never lets an "
            "unlearner see the cells it is audited on."
        )
    return {"calibration": np.asarray(split.calibration)}


def _utility(model, split, labels: np.ndarray, seed: int) -> dict[str, float]:
    from scforget.privacy import signals

    names = model.adata.obs_names
    cells = np.concatenate([split.forget, split.holdout, split.unseen])
    nll = -signals(model, cells, include_latent=False, progress_bar=False)["recon_ll"]
    forget_nll = nll.loc[names[split.forget]].mean()
    holdout_nll = nll.loc[names[split.holdout]].mean()
    unseen_nll = nll.loc[names[split.unseen]].mean()
    return {
        "heldout_nll": float(unseen_nll),
        "forget_nll": float(forget_nll),
        "holdout_nll": float(holdout_nll),
        "membership_gap": float(holdout_nll - forget_nll),
        "celltype_accuracy": _latent_accuracy(model, split.retain, split.unseen, labels, seed),
    }


def run_benchmark(config: BenchmarkConfig, *, progress: bool = True) -> BenchmarkResult:
    """Run the whole protocol.

    For every forget design: a baseline per baseline seed (the split is the design's, decided
    before training), the retrain reference per retrain seed, then every method once per unlearning
    seed on every baseline; each model is measured (utility) and audited on the design's forget vs
    holdout cells. :func:`~scforget.benchmark._summary.summarise` turns the runs into the
    pre-registered estimates. With ``config.fleet`` the retrain seeds and SISA's shards train in
    parallel on a Dask cluster.

    Parameters
    ----------
    config
        What to run.
    progress
        Show a progress bar over the whole protocol and one line per finished model.

    Returns
    -------
    The per-run and per-method tables.
    """
    with fleet_client(config.fleet) as fleet:
        return _run(config, progress, fleet)


def _run(config: BenchmarkConfig, progress: bool, fleet: Any) -> BenchmarkResult:
    """:func:`run_benchmark` with the fleet (``None`` or a :class:`distributed.Client`) open."""
    import scforget as sf
    from scforget.methods import available, get_method

    from ._baseline import retrain_job, train_baseline
    from ._cache import ModelCache
    from ._designs import BUILDERS, design_data
    from ._forget_designs import parse_designs
    from ._markers import PBMC_MARKERS, marker_expression, mean_gene_correlation, observed_proportions
    from ._preflight import preflight_row
    from ._progress import Progress
    from ._summary import summarise

    methods = config.methods or [m for m in available()["name"] if m not in ("retrain", "adapter_remap")]
    specs = {m: get_method(m) for m in methods}  # fail before any training on an unknown name
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    adata = prepare_data(config)
    designs = parse_designs(
        config.forget,
        adata,
        label_key=config.label_key,
        donor_key=config.donor_key,
        heldout_donors=config.heldout_donors,
    )
    labels = adata.obs[config.label_key].astype(str).to_numpy()
    sf.model.SCVI.setup_anndata(adata)
    cache = ModelCache(config.cache, adata)
    recipe = baseline_recipe(config)
    timings["prepare_s"] = time.perf_counter() - t0
    n_variants = sum(len(config.dp_epsilons) if m == "dpsgd" else 1 for m in methods)
    per_design = len(config.baseline_seeds) * (1 + n_variants * len(config.seeds)) + len(config.retrain_seeds)
    bar = Progress(len(designs) * per_design, enabled=progress)
    bar.say(f"data: {adata.n_obs} cells x {adata.n_vars} genes; designs: {', '.join(d.name for d in designs)}")

    rows: list[dict[str, Any]] = []
    preflight_rows: list[dict[str, Any]] = []
    scores: dict[tuple[str, str, int, int], pd.DataFrame] = {}

    markers = [g for g in PBMC_MARKERS if g in adata.var_names]
    expression: dict[tuple[str, str, int, int], np.ndarray] = {}
    observed: dict[str, np.ndarray] = {}  # per design: the unseen cells' observed marker proportions

    def measure(design, split, model, method: str, b_seed: int, seed: int, wall: float, references: list) -> dict:
        row: dict[str, Any] = {"design": design.name, "method": method, "baseline_seed": b_seed, "seed": seed}
        row["wall_time_s"] = wall
        row.update(_utility(model, split, labels, seed))
        if markers:
            expr = marker_expression(model, split.unseen, markers, seed=seed)
            expression[(design.name, method, b_seed, seed)] = expr
            if design.name not in observed:
                observed[design.name] = observed_proportions(adata, split.unseen, markers)
            row["marker_r_observed"] = mean_gene_correlation(expr, observed[design.name])
        if config.audit:
            cols, report = _audit_columns(model, split, references, config, seed)
            row.update(cols)
            scores[(design.name, method, b_seed, seed)] = report.per_cell
        return row

    for design in designs:
        split = design_split(design, adata, config)
        bar.say(f"design {design.name}: {split!r}")
        bases = {}
        base_keys = {}
        sets = split.datasplitter_kwargs()["external_indexing"]
        for b_seed in config.baseline_seeds:
            bar.step(f"{design.name}: baseline (seed {b_seed})")
            key = cache.key(
                kind="baseline", train=sets[0], validation=sets[1], test=sets[2], seed=b_seed, recipe=recipe
            )
            base_keys[b_seed] = key
            hit = cache.get(key, adata)
            if hit is not None:
                bases[b_seed] = hit
                continue
            bases[b_seed] = train_baseline(adata, split, config, b_seed)
            cache.put(key, *bases[b_seed], accelerator=config.accelerator)
        base_s = float(np.mean([w for _, w in bases.values()]))
        timings[f"{design.name}:baseline_train_s"] = base_s
        first = bases[config.baseline_seeds[0]][0]
        done, todo = {}, []
        for r_seed in config.retrain_seeds:
            key = cache.key(kind="retrain", base=base_keys[config.baseline_seeds[0]], seed=r_seed)
            hit = cache.get(key, adata)
            if hit is not None:
                bar.step(f"{design.name}: retrain (seed {r_seed}, cached)")
                done[r_seed] = hit
            else:
                todo.append((r_seed, key))
        shared = {"model": first, "forget": split.forget, "accelerator": config.accelerator}
        if fleet is None:  # one after another, a progress step each
            results = []
            for r_seed, _ in todo:
                bar.step(f"{design.name}: retrain (seed {r_seed})")
                results += run_jobs(retrain_job, [{"seed": r_seed}], shared=shared)
        else:
            results = run_jobs(retrain_job, [{"seed": r_seed} for r_seed, _ in todo], fleet=fleet, shared=shared)
            for r_seed, _ in todo:
                bar.step(f"{design.name}: retrain (seed {r_seed}, on the fleet)")
        for (r_seed, key), result in zip(todo, results, strict=True):
            done[r_seed] = (from_payload(first, result["payload"]), result["seconds"])
            cache.put(key, *done[r_seed], accelerator=config.accelerator)
        retrained = [(r_seed, *done[r_seed]) for r_seed in config.retrain_seeds]
        retrain_time = float(np.median([w for _, _, w in retrained]))  # the median retrain: robust to one slow run
        timings[f"{design.name}:retrain_s"] = retrain_time
        ref_models = [m for _, m, _ in retrained]
        if config.preflight:
            preflight_rows.append(preflight_row(design.name, first, split, config, retrain_time))
        for b_seed, (base, wall) in bases.items():
            row = measure(design, split, base, "baseline", b_seed, b_seed, wall, ref_models)
            rows.append({**row, "guarantee": "none", "design_train_s": wall, "retrain_time_s": retrain_time})
        for r_seed, model, wall in retrained:
            others = [m for s_, m, _ in retrained if s_ != r_seed]
            row = measure(design, split, model, "retrain", config.baseline_seeds[0], r_seed, wall, others)
            rows.append({**row, "guarantee": "exact", "design_train_s": base_s, "retrain_time_s": retrain_time})
        bar.say(f"{design.name}: baseline {base_s:.1f} s, retrain {retrain_time:.1f} s per model")

        # models built for deletion (SISA, adapters), per kind and baseline seed: (model, build s, data, key)
        built: dict[tuple[str, int], tuple[Any, float, Any, str]] = {}
        for b_seed, (base, base_wall) in bases.items():
            for method in methods:
                spec = specs[method]
                kind = "scvi" if "scvi" in spec.designs else spec.designs[0]
                variants = (
                    [
                        (f"dpsgd (eps={e:g})", {"target_epsilon": float(e), "max_epochs": config.dp_epochs})
                        for e in config.dp_epsilons
                    ]
                    if method == "dpsgd"
                    else [(method, {})]
                )
                if kind == "scvi":
                    start_model, build_s, data, parent = base, base_wall, adata, base_keys[b_seed]
                else:
                    if (kind, b_seed) not in built:
                        data = design_data(kind, adata, split, config, b_seed)
                        bkey = cache.key(
                            kind=f"built:{kind}",
                            base=base_keys[b_seed],
                            label_key=config.label_key,
                            sisa_shards=config.sisa_shards,
                            sisa_slices=config.sisa_slices,
                            n_pseudo_donors=config.n_pseudo_donors,
                        )
                        hit = cache.get(bkey, data)
                        if hit is None:
                            # SISA's shards are independent trainings: a fleet runs them in parallel
                            on_fleet = {"fleet": fleet} if kind == "sharded" else {}
                            hit = BUILDERS[kind](data, split, config, b_seed, **on_fleet)
                            cache.put(bkey, *hit, accelerator=config.accelerator)
                        built[(kind, b_seed)] = (*hit, data, bkey)
                    start_model, build_s, data, parent = built[(kind, b_seed)]
                cells = unlearner_cells(spec, split)
                for label, params in variants:
                    for seed in config.seeds:
                        bar.step(f"{design.name}: {label} (baseline {b_seed}, seed {seed})")
                        key = cache.key(kind="method", base=parent, method=method, params=params, seed=seed, **cells)
                        hit = cache.get(key, data)
                        if hit is not None:
                            model, wall = hit
                        else:
                            start = time.perf_counter()
                            model = start_model.unlearn(
                                split.forget,
                                method=method,
                                seed=seed,
                                accelerator=config.accelerator,
                                enable_progress_bar=False,
                                **params,
                                **cells,
                            )
                            wall = time.perf_counter() - start
                            cache.put(key, model, wall, accelerator=config.accelerator)
                        record = model.unlearning_records_[-1]
                        row = measure(design, split, model, label, b_seed, seed, wall, ref_models)
                        row.update(
                            {"guarantee": spec.guarantee, "design_train_s": build_s, "retrain_time_s": retrain_time}
                        )
                        if "cost_fraction" in record:
                            row["cost_fraction"] = float(record["cost_fraction"])
                        if "epsilon" in record:
                            row["epsilon"] = float(record["epsilon"])
                        if "n_calibration_cells" in record:
                            row["n_calibration_cells"] = int(record["n_calibration_cells"])
                        rows.append(row)
        if markers:  # each model's marker expression against the mean of the retrain models'
            retrain_mean = np.mean([v for k, v in expression.items() if k[:2] == (design.name, "retrain")], axis=0)
            for row in rows:
                key = (row["design"], row["method"], row["baseline_seed"], row["seed"])
                if row["design"] == design.name and key in expression:
                    row["marker_r_retrain"] = mean_gene_correlation(expression[key], retrain_mean)
        for (kind, _), (_, build_s, _, _) in built.items():
            timings[f"{design.name}:{kind}_train_s"] = timings.get(f"{design.name}:{kind}_train_s", 0.0) + build_s
    bar.close()
    runs = pd.DataFrame(rows)
    runs["time_ratio_to_retrain"] = runs["wall_time_s"] / runs["retrain_time_s"]
    runs.loc[runs["method"] == "baseline", "time_ratio_to_retrain"] = np.nan
    timings["total_s"] = time.perf_counter() - t0
    if config.cache is not None:
        timings["cache_hits"] = float(cache.hits)
        timings["cache_misses"] = float(cache.misses)
    summary = summarise(runs, scores, config)
    return BenchmarkResult(
        runs=runs,
        summary=summary,
        config=config,
        timings=timings,
        scores=scores,
        preflight=pd.DataFrame(preflight_rows).set_index("design") if preflight_rows else pd.DataFrame(),
    )
