"""scVI with unlearning."""

from __future__ import annotations

from typing import Any, Literal

import scvi

from scforget._core import (
    check_bool,
    check_choice,
    check_counts,
    check_int,
    check_number,
    record_cell_order,
    record_training_call,
    resolve_seed,
    seeded,
    split_cells,
)
from scforget.methods._checkpoint import CHECKPOINT_ATTR
from scforget.methods._private import check_private_architecture, check_private_strategy, train_private

from ._mixin import UnlearningMixin


class SCVI(UnlearningMixin, scvi.model.SCVI):
    """:class:`scvi.model.SCVI` that can forget cells.

    A drop-in replacement: same constructor, ``setup_anndata``, ``train``, ``save`` and ``load``
    as :class:`scvi.model.SCVI` (saves load in plain scvi-tools and stock saves load here), plus
    :meth:`~scforget.model.UnlearningMixin.unlearn` and
    :meth:`~scforget.model.UnlearningMixin.from_scvi_model`. The one changed default is
    ``gene_likelihood="nb"``: a negative binomial on raw counts with the observed library size,
    the likelihood every scforget audit signal is computed with.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` of *this* class.
    registry
        Registry of a datamodule (see :class:`scvi.model.SCVI`).
    n_hidden
        Nodes per hidden layer.
    n_latent
        Dimensionality of the latent space.
    n_layers
        Number of hidden layers of encoder and decoder.
    dropout_rate
        Dropout rate of the encoder.
    dispersion
        Dispersion parameterisation of the negative binomial.
    gene_likelihood
        Likelihood of the counts (``"nb"`` here; scvi-tools defaults to ``"zinb"``).
    use_observed_lib_size
        Use the observed library size instead of learning it.
    latent_distribution
        ``"normal"`` or ``"ln"``.
    **kwargs
        Passed to :class:`scvi.module.VAE`.

    Examples
    --------
    >>> import scforget as sf
    >>> adata = sf.datasets.pbmc3k()
    >>> sf.model.SCVI.setup_anndata(adata)
    >>> model = sf.model.SCVI(adata)
    >>> model.train(max_epochs=50)
    >>> new = model.unlearn(adata.obs["cell_type"] == "DC", method="finetune")
    """

    _scvi_parent = scvi.model.SCVI

    def __init__(
        self,
        adata=None,
        registry: dict | None = None,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch", "gene-label", "gene-cell"] = "gene",
        gene_likelihood: Literal["zinb", "nb", "poisson", "normal"] = "nb",
        use_observed_lib_size: bool = True,
        latent_distribution: Literal["normal", "ln"] = "normal",
        **kwargs,
    ):
        super().__init__(
            adata,
            registry,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size,
            latent_distribution=latent_distribution,
            **kwargs,
        )
        self.init_params_ = self._get_init_params(locals())

    def train_private(
        self,
        target_epsilon: float,
        *,
        target_delta: float | None = None,
        max_grad_norm: float = 1.0,
        max_epochs: int | None = None,
        batch_size: int = 128,
        accountant: Literal["prv", "rdp"] = "prv",
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        seed: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        **trainer_kwargs: Any,
    ) -> dict[str, Any]:
        """Train with differentially private SGD (Opacus): an (epsilon, delta) guarantee for every training cell.

        Per-cell gradients are clipped to ``max_grad_norm`` and Gaussian noise is added, with the noise
        multiplier Opacus computes for ``target_epsilon`` over ``max_epochs`` epochs of Poisson-sampled
        minibatches (expected size ``batch_size``). The cells are split into training, validation and
        test cells as :meth:`train` does. The guarantee (epsilon spent, delta, noise multiplier, clipping
        norm, sample rate, steps, accountant) is returned and stored in ``privacy_`` (saved with the
        model); ``unlearn(method="retrain")`` of this model retrains with DP-SGD and the same budget.

        The model must use LayerNorm, not BatchNorm (BatchNorm mixes the cells of a minibatch, so
        per-cell clipping is impossible): ``SCVI(adata, use_batch_norm="none", use_layer_norm="both")``.

        Parameters
        ----------
        target_epsilon
            Privacy budget epsilon of the whole training.
        target_delta
            Delta; default ``1 / n`` with ``n`` the number of training cells.
        max_grad_norm
            Per-cell gradient clipping norm.
        max_epochs
            Epochs (default: scvi-tools' heuristic for the number of cells).
        batch_size
            Expected minibatch size (Poisson sampling; each epoch has ``ceil(n / batch_size)`` steps).
        accountant
            ``"prv"`` (privacy random variable accountant; tighter) or ``"rdp"`` (Rényi DP).
        train_size, validation_size, shuffle_set_split, datasplitter_kwargs
            How cells are split, as in :meth:`train` (e.g. ``datasplitter_kwargs=split.datasplitter_kwargs()``).
        plan_kwargs
            Arguments of the training plan (``lr``, ``weight_decay``, ``n_epochs_kl_warmup``...).
        seed
            Seed of the sampling and the noise; ``None`` follows :attr:`scvi.settings.seed`.
        accelerator, devices
            Passed to Lightning (``"auto"`` means one device, not every GPU). With ``devices=N`` (and
            ``strategy="ddp"``, the default then) training runs in N processes under Lightning DDP:
            each draws its own Poisson share of the cells, Opacus' distributed optimiser adds the noise
            once and sums the processes' gradients, and the record is the same as in one process.
            ``batch_size`` is per process, as in scvi-tools. Strategies that train in child processes
            (``ddp_spawn``, ``ddp_notebook``) or shard parameters are refused.
        **trainer_kwargs
            Arguments of :class:`scvi.train.Trainer`.

        Returns
        -------
        The privacy record.

        Examples
        --------
        >>> model = sf.model.SCVI(adata, use_batch_norm="none", use_layer_norm="both")
        >>> model.train_private(target_epsilon=3.0, max_epochs=100)["epsilon"]
        """
        from scforget._core import default_max_epochs

        check_private_architecture(self.module)
        check_private_strategy(trainer_kwargs)
        target_epsilon = check_number(target_epsilon, "target_epsilon", minimum=0, exclusive_minimum=True)
        target_delta = check_number(
            target_delta, "target_delta", minimum=0, maximum=1, exclusive_minimum=True, allow_none=True
        )
        max_grad_norm = check_number(max_grad_norm, "max_grad_norm", minimum=0, exclusive_minimum=True)
        max_epochs = check_int(max_epochs, "max_epochs", minimum=1, allow_none=True)
        batch_size = check_int(batch_size, "batch_size", minimum=2)
        check_choice(accountant, ("prv", "rdp"), "accountant")
        check_bool(shuffle_set_split, "shuffle_set_split")
        if "gradient_clip_val" in trainer_kwargs:
            raise TypeError("DP-SGD clips every per-cell gradient to `max_grad_norm`; drop `gradient_clip_val`.")
        seed = resolve_seed(seed)
        check_counts(self)
        epochs = default_max_epochs(self.adata.n_obs) if max_epochs is None else max_epochs
        train, val, test = split_cells(
            self.adata_manager,
            seed=seed,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            datasplitter_kwargs=datasplitter_kwargs,
        )
        with seeded(seed):
            record = train_private(
                self,
                train,
                val,
                target_epsilon=target_epsilon,
                target_delta=target_delta,
                max_grad_norm=max_grad_norm,
                max_epochs=epochs,
                batch_size=batch_size,
                accountant=accountant,
                plan_kwargs=plan_kwargs,
                seed=seed,
                accelerator=accelerator,
                devices=devices,
                trainer_kwargs=trainer_kwargs,
            )
        self.train_indices, self.validation_indices, self.test_indices = train, val, test
        setattr(self, CHECKPOINT_ATTR, None)  # an earlier non-private training's checkpoint has no guarantee
        arguments = {"max_epochs": epochs, "batch_size": batch_size, "plan_kwargs": plan_kwargs or {}}
        record_training_call(self, arguments, seconds=record["train_seconds"], n_train_cells=train.size)
        record_cell_order(self)
        return record
