"""scVI with unlearning."""

from __future__ import annotations

from typing import Literal

import scvi

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
