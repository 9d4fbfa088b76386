"""The benchmark protocol behind ``scforget benchmark``.

Baseline -> structured forget split decided before training -> every method over several seeds
-> utility and membership metrics per model -> one table. The retrain reference is trained with
the baseline's exact recipe on the retain cells only, over the same seeds, and its models double
as LiRA reference models so that nothing is trained twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scforget._core import quiet_training

from ._config import BenchmarkConfig

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


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
        One row per trained or unlearned model (method, seed) with every measured column.
    summary
        One row per method: means (and standard deviations) over seeds.
    config
        The configuration.
    timings
        Wall times of the stages, in seconds.
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    config: BenchmarkConfig
    timings: dict[str, float]

    def write(self, out: str | Path) -> list[Path]:
        """Write ``runs.csv``, ``summary.csv``, ``summary.md`` and ``config.json`` into ``out``."""
        import json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "runs.csv", out / "summary.csv", out / "summary.md", out / "config.json"]
        self.runs.to_csv(paths[0], index=False)
        self.summary.to_csv(paths[1])
        paths[2].write_text(self.to_markdown())
        paths[3].write_text(json.dumps({"config": self.config.to_dict(), "timings_s": self.timings}, indent=2))
        return paths

    def to_markdown(self) -> str:
        """The summary as a Markdown table, with the configuration."""
        cfg = self.config
        head = (
            f"# scforget benchmark\n\nData: {cfg.data or 'bundled pbmc3k'}; forget {cfg.label_key} == {cfg.forget!r} "
            f"(holdout fraction {cfg.holdout_fraction}); scVI n_hidden={cfg.n_hidden}, n_latent={cfg.n_latent}, "
            f"{cfg.epochs} training epochs; seeds {cfg.seeds}.\n\n"
            f"Deletion designs: the forget group ({cfg.label_key} == {cfg.forget!r}) is one donor and the other "
            f"cells {cfg.n_pseudo_donors} pseudo-donors (random groups: the data has one donor). SISA: "
            f"{cfg.sisa_shards} shards x {cfg.sisa_slices} slices, donors kept whole; adapters: half the "
            "pseudo-donors form the core, the rest and the forget group are mapped; DP-SGD at epsilon "
            f"{', '.join(f'{e:g}' for e in cfg.dp_epsilons)}. `guarantee` says what each row promises; "
            "`design_train_s` is the cost of building the model a method starts from.\n\n"
        )
        return head + _markdown(self.summary.reset_index()) + "\n"


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


def _audit_columns(model, split, references: list, config: BenchmarkConfig, seed: int) -> dict[str, Any]:
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
    best = report.best_attack()
    row = summary.loc[best]
    out = {
        "best_attack": best,
        "auc": float(row["auc"]),
        "auc_ci_low": float(row["ci_low"]),
        "auc_ci_high": float(row["ci_high"]),
        "advantage": float(row["advantage"]),
        "tpr_at_1pct_fpr": float(row["tpr_1pct"]),
    }
    for attack in summary.index:
        out[f"auc_{attack}"] = float(summary.loc[attack, "auc"])
    return out


def run_benchmark(config: BenchmarkConfig, *, progress: bool = True) -> BenchmarkResult:
    """Run the whole protocol.

    Parameters
    ----------
    config
        What to run.
    progress
        Print one line per finished model.

    Returns
    -------
    The per-run and per-method tables.
    """
    import scvi

    import scforget as sf
    from scforget.methods import available, get_method

    from ._designs import train_adapters, train_sharded

    builders = {"sharded": train_sharded, "adapters": train_adapters}
    say = print if progress else logger.info
    methods = config.methods or [m for m in available()["name"] if m not in ("retrain", "adapter_remap")]
    specs = {m: get_method(m) for m in methods}  # fail before any training on an unknown name
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    adata = prepare_data(config)
    split = sf.data.structured_forget(
        adata, config.label_key, config.forget, holdout_fraction=config.holdout_fraction, seed=config.seeds[0]
    )
    timings["prepare_s"] = time.perf_counter() - t0
    say(f"data: {adata.n_obs} cells x {adata.n_vars} genes; {split!r}")

    labels = adata.obs[config.label_key].astype(str).to_numpy()
    sf.model.SCVI.setup_anndata(adata)
    scvi.settings.seed = config.seeds[0]
    base = sf.model.SCVI(adata, n_hidden=config.n_hidden, n_latent=config.n_latent, gene_likelihood="nb")
    t0 = time.perf_counter()
    with quiet_training():
        base.train(
            max_epochs=config.epochs,
            datasplitter_kwargs=split.datasplitter_kwargs(),
            accelerator=config.accelerator,
            enable_progress_bar=False,
        )
    timings["baseline_train_s"] = time.perf_counter() - t0
    say(f"baseline: {config.epochs} epochs in {timings['baseline_train_s']:.1f} s")

    def measure(model, method: str, seed: int, wall: float, references: list) -> dict[str, Any]:
        row = {"method": method, "seed": seed, "wall_time_s": wall}
        row.update(_utility(model, split, labels, seed))
        if config.audit:
            row.update(_audit_columns(model, split, references, config, seed))
        return row

    rows = []
    retrained = []
    t0 = time.perf_counter()
    for seed in config.seeds:
        start = time.perf_counter()
        model = base.unlearn(
            split.forget, method="retrain", seed=seed, accelerator=config.accelerator, enable_progress_bar=False
        )
        retrained.append((seed, model, time.perf_counter() - start))
    timings["retrain_s"] = time.perf_counter() - t0
    retrain_time = float(np.mean([w for _, _, w in retrained]))
    say(f"retrain: {len(retrained)} seed(s), {retrain_time:.1f} s each")

    ref_models = [m for _, m, _ in retrained]
    rows.append(
        {
            **measure(base, "baseline", config.seeds[0], timings["baseline_train_s"], ref_models),
            "guarantee": "none",
            "design_train_s": timings["baseline_train_s"],
        }
    )
    for seed, model, wall in retrained:
        others = [m for s, m, _ in retrained if s != seed]
        rows.append(
            {
                **measure(model, "retrain", seed, wall, others),
                "guarantee": "exact",
                "design_train_s": timings["baseline_train_s"],
            }
        )

    built: dict[tuple[str, int], tuple[Any, float]] = {}

    def source(design: str, seed: int) -> tuple[Any, float]:
        """The model a method starts from: the baseline, or a model built for deletion (once per seed)."""
        if design == "scvi":
            return base, timings["baseline_train_s"]
        if (design, seed) not in built:
            built[(design, seed)] = builders[design](adata, split, config, seed)
            say(f"{design} design (seed {seed}): trained in {built[(design, seed)][1]:.1f} s")
            timings[f"{design}_train_s"] = timings.get(f"{design}_train_s", 0.0) + built[(design, seed)][1]
        return built[(design, seed)]

    for method in methods:
        spec = specs[method]
        design = "scvi" if "scvi" in spec.designs else spec.designs[0]
        variants = (
            [(f"dpsgd (eps={e:g})", {"target_epsilon": float(e)}) for e in config.dp_epsilons]
            if method == "dpsgd"
            else [(method, {})]
        )
        for label, params in variants:
            for seed in config.seeds:
                start_model, build_s = source(design, seed)
                start = time.perf_counter()
                model = start_model.unlearn(
                    split.forget,
                    method=method,
                    seed=seed,
                    accelerator=config.accelerator,
                    enable_progress_bar=False,
                    **params,
                )
                wall = time.perf_counter() - start
                record = model.unlearning_records_[-1]
                row = measure(model, label, seed, wall, ref_models)
                row.update({"guarantee": spec.guarantee, "design_train_s": build_s})
                if "cost_fraction" in record:
                    row["cost_fraction"] = float(record["cost_fraction"])
                if "epsilon" in record:
                    row["epsilon"] = float(record["epsilon"])
                rows.append(row)
                say(f"{label} (seed {seed}): {wall:.1f} s")
    runs = pd.DataFrame(rows)
    runs["time_ratio_to_retrain"] = runs["wall_time_s"] / retrain_time
    runs.loc[runs["method"] == "baseline", "time_ratio_to_retrain"] = np.nan
    timings["total_s"] = sum(v for k, v in timings.items() if k != "total_s") + 0.0
    return BenchmarkResult(runs=runs, summary=summarise(runs), config=config, timings=timings)


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


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per method (standard deviation in ``*_sd`` columns where seeds > 1)."""
    numeric = runs.drop(columns=["seed"]).select_dtypes("number")
    numeric["method"] = runs["method"]
    order = list(dict.fromkeys(runs["method"]))
    mean = numeric.groupby("method", sort=False).mean().loc[order]
    cols = [
        c
        for c in (
            "wall_time_s",
            "time_ratio_to_retrain",
            "design_train_s",
            "cost_fraction",
            "epsilon",
            "heldout_nll",
            "forget_nll",
            "holdout_nll",
            "membership_gap",
            "celltype_accuracy",
            "auc",
            "auc_ci_low",
            "auc_ci_high",
            "advantage",
            "tpr_at_1pct_fpr",
        )
        if c in mean.columns
    ]
    summary = mean[cols].copy()
    if "best_attack" in runs.columns:
        summary.insert(
            len(cols) - 5 if "auc" in cols else len(cols),
            "best_attack",
            runs.groupby("method", sort=False)["best_attack"].agg(lambda s: s.mode().iat[0]).loc[order],
        )
    n = runs.groupby("method", sort=False).size().loc[order]
    if "guarantee" in runs.columns:
        summary.insert(0, "guarantee", runs.groupby("method", sort=False)["guarantee"].first().loc[order])
    summary.insert(0, "n_seeds", n)
    if "advantage" in runs.columns and (n > 1).any():
        summary["advantage_sd"] = numeric.groupby("method", sort=False)["advantage"].std().loc[order]
    return summary
