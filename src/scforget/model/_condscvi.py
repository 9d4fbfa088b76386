"""Conditional scVI (CondSCVI) with unlearning."""

from __future__ import annotations

import scvi

from ._mixin import UnlearningMixin


class CondSCVI(UnlearningMixin, scvi.model.CondSCVI):
    """:class:`scvi.model.CondSCVI` that can forget cells.

    A drop-in replacement with the parent's constructor, ``setup_anndata``, ``train``, ``save`` and
    ``load``, plus :meth:`~scforget.model.UnlearningMixin.unlearn` and
    :meth:`~scforget.model.UnlearningMixin.from_scvi_model`. Note that ``CondSCVI.train`` holds out
    no cells by default (``train_size=1``); pass ``train_size`` or ``datasplitter_kwargs`` to keep
    non-members for auditing.

    Examples
    --------
    >>> sf.model.CondSCVI.setup_anndata(adata, labels_key="cell_type")
    >>> model = sf.model.CondSCVI(adata)
    >>> model.train(max_epochs=100, train_size=0.9)
    >>> new = model.unlearn(adata.obs["cell_type"] == "DC", method="finetune")
    """

    _scvi_parent = scvi.model.CondSCVI
