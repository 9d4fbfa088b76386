"""Settings of a benchmark run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class BenchmarkConfig:
    """Everything that defines a benchmark run (recorded next to its results).

    Attributes
    ----------
    data
        Path to an ``.h5ad`` with raw counts, or ``None`` for the bundled pbmc3k.
    label_key
        ``obs`` column holding the groups.
    forget
        Group to forget (a value of ``label_key``).
    holdout_fraction
        Fraction of the group held out of training as same-biology non-members.
    n_top_genes
        Highly variable genes kept (seurat_v3 on counts); ``0`` keeps all genes.
    epochs
        Training epochs of the baseline (and of every retrain).
    n_hidden, n_latent
        scVI architecture.
    methods
        Methods to run; ``None`` runs every registered method (but ``adapter_remap``, which equals
        ``adapter_drop`` when whole groups are forgotten).
    seeds
        Seeds of each method run (the retrain reference uses all of them).
    audit
        Whether to run the membership-inference audit per model.
    n_bootstrap
        Bootstrap resamples of the audit's confidence intervals.
    accelerator
        Lightning accelerator.
    dp_epsilons
        Privacy budgets of the ``dpsgd`` rows (one row per epsilon).
    sisa_shards, sisa_slices
        Shards and slices of the SISA ensemble.
    n_pseudo_donors
        Pseudo-donors of the adapter design (pbmc3k has one donor): half form the core, the other
        half and the forget group are mapped as adapters.
    quick
        Whether this is the quick configuration.
    """

    data: str | None = None
    label_key: str = "cell_type"
    forget: str = "DC"
    holdout_fraction: float = 0.5
    n_top_genes: int = 2000
    epochs: int = 400
    n_hidden: int = 128
    n_latent: int = 10
    methods: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    audit: bool = True
    n_bootstrap: int = 1000
    accelerator: str = "auto"
    dp_epsilons: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0])
    sisa_shards: int = 4
    sisa_slices: int = 2
    n_pseudo_donors: int = 8
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> BenchmarkConfig:
        """A configuration that runs in a few minutes on a laptop CPU (one DP-SGD row, epsilon 3)."""
        base = {
            "epochs": 60,
            "n_top_genes": 1000,
            "seeds": [0],
            "n_bootstrap": 200,
            "dp_epsilons": [3.0],
            "quick": True,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)
