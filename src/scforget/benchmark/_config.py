"""Settings of a benchmark run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from scforget._core import local_workers


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
        Forget designs, each run on its own baseline: a group of ``label_key`` (structured), or
        ``"random:N"`` (N scattered cells), or ``"donor:ID"`` (a donor of ``donor_key``).
    donor_key
        ``obs`` column of donors, for ``donor:ID`` designs. ``"pseudo_donor"``, when the data has no
        such column, makes one: ``n_pseudo_donors`` random groups stratified by ``label_key`` (seeded
        by ``split_seed``), named ``donor_0``, ``donor_1``, ...; they share one biology and carry no
        donor effect.
    heldout_donors
        For donor designs: this many other donors are set aside whole before training, and their
        cells join the forgotten donor's held-out cells as non-members (donors never trained on).
    holdout_fraction
        Fraction of a structured group or donor held out of training as same-biology non-members.
    calibration_fraction
        Share of every design's non-members kept apart as calibration cells
        (:meth:`~scforget.data.ForgetSplit.carve_calibration`): methods with a ``calibration``
        parameter receive them, the audit never uses them, so no unlearner sees an audit
        non-member. ``0`` keeps every non-member for the audit (and such methods fall back to their
        default).
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
        Seeds of each unlearning run (every method runs once per seed on each baseline).
    retrain_seeds
        Seeds of the retrain reference (its band, and LiRA's reference models).
    baseline_seeds
        Seeds of the baseline, trained once per seed; the split stays that of ``split_seed``.
    split_seed
        Seed of every design's split.
    primary_attack
        The pre-registered attack of the verdict columns (others are reported as secondary);
        ``"lira"`` falls back to ``"classifier"`` for models without references of their architecture.
    audit
        Whether to run the membership-inference audit per model.
    n_bootstrap
        Bootstrap resamples of the audit's confidence intervals.
    accelerator
        Lightning accelerator.
    fleet
        Where the independent trainings (retrain seeds, SISA shards) run: ``None`` one after another
        here, ``"local:N"`` on ``N`` local worker processes (Dask), or a Dask scheduler's address
        (``tcp://host:8786``); needs ``pip install 'scforget[fleet]'``.
    dp_epsilons
        Privacy budgets of the ``dpsgd`` rows (one row per epsilon).
    dp_epochs
        Epochs of the DP-SGD training; ``None`` uses the baseline's (quick mode: 5, since Opacus'
        per-sample gradients make an epoch about 9x dearer on a CPU).
    sisa_shards, sisa_slices
        Shards and slices of the SISA ensemble.
    n_pseudo_donors
        Pseudo-donors of the adapter design (pbmc3k has one donor): half form the core, the other
        half and the forget group are mapped as adapters.
    preflight
        Run :func:`scforget.fisher.unlearnability` on the first baseline of every design, before any
        unlearning, and write its verdict, scores and cost (``preflight.csv``).
    cache
        Directory of trained models to reuse (baselines, retrains, the models built for deletion and
        every unlearned model), keyed by
        data, split, recipe, seed, method and package versions; ``None`` caches nothing.
    quick
        Whether this is the quick configuration.
    """

    data: str | None = None
    label_key: str = "cell_type"
    forget: list[str] = field(default_factory=lambda: ["DC"])
    donor_key: str | None = None
    heldout_donors: int = 0
    holdout_fraction: float = 0.5
    calibration_fraction: float = 0.25
    n_top_genes: int = 2000
    epochs: int = 400
    n_hidden: int = 128
    n_latent: int = 10
    methods: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    retrain_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    baseline_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    split_seed: int = 0
    primary_attack: str = "lira"
    audit: bool = True
    n_bootstrap: int = 1000
    accelerator: str = "auto"
    fleet: str | None = None
    dp_epsilons: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0])
    dp_epochs: int | None = None
    sisa_shards: int = 4
    sisa_slices: int = 2
    n_pseudo_donors: int = 8
    cache: str | None = None
    preflight: bool = False
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> BenchmarkConfig:
        """A configuration that runs in a few minutes on a laptop CPU (one DP-SGD row, epsilon 3)."""
        base = {
            "epochs": 40,
            "n_top_genes": 700,
            "seeds": [0],
            "retrain_seeds": [0, 1],
            "baseline_seeds": [0],
            "n_bootstrap": 200,
            "dp_epsilons": [3.0],
            "dp_epochs": 5,
            "quick": True,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def __post_init__(self) -> None:
        if isinstance(self.forget, str):
            self.forget = [self.forget]
        for name in ("seeds", "retrain_seeds", "baseline_seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"--{name.replace('_', '-')} needs distinct seeds; got {values}.")
        if self.fleet is not None:
            local_workers(self.fleet)  # a malformed --fleet fails here, before any cluster or training
        if not 0 <= self.calibration_fraction < 1:
            raise ValueError(f"--calibration-fraction must lie in [0, 1); got {self.calibration_fraction}.")
        if self.primary_attack not in ("loss", "kl", "classifier", "distance", "lira"):
            raise ValueError(
                f"--primary-attack must be loss, kl, classifier, distance or lira; got {self.primary_attack!r}."
            )

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)
