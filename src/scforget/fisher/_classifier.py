"""The classifier comparison of the Fisher-overlap analysis, done on equal terms."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from scforget._core import check_int, check_number, resolve_seed, warn

from ._engine import module_diagonal
from ._overlap import complement, overlap_table

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec


@dataclass
class ClassifierBaseline:
    """Fisher overlap of classifiers for a forget class (the result of :func:`classifier_baseline`).

    Attributes
    ----------
    table
        The :func:`~scforget.fisher.overlap` statistics with a ``(model, category)`` index:
        ``model`` is ``"linear_probe"`` (multinomial logistic regression on the VAE's standardised
        posterior means) or ``"mlp"`` (a ReLU network on log-normalised counts of the VAE's genes,
        as deep and wide as the VAE's encoder); categories are ``"hidden"``, ``"output"`` and
        ``"global"``.
    accuracy
        Per classifier: ``train`` accuracy and ``validation`` accuracy (scikit-learn's early-stopping
        split for the MLP; a 10% split of the training cells for the probe).
    classifiers
        The fitted scikit-learn estimators.
    """

    table: pd.DataFrame
    accuracy: pd.DataFrame
    classifiers: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_df(self) -> pd.DataFrame:
        """The overlap table."""
        return self.table


def _log_normalised(adata: AnnData, genes: pd.Index | None, layer: str | None) -> sp.csr_matrix | np.ndarray:
    """``log1p(counts / total * 1e4)`` in float32, sparse when the counts are (zeros stay zeros)."""
    x = adata.layers[layer] if layer is not None else adata.X
    if genes is not None:
        x = x[:, adata.var_names.get_indexer(genes)]
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32, copy=True)
        values = x.data
    else:
        x = np.array(x, dtype=np.float32)
        values = x
    if (values < 0).any() or not np.allclose(values, np.round(values)):
        warn(
            "The classifier input does not look like raw counts; it is normalised to 10,000 per cell and "
            "log1p-transformed as if it were. Pass `layer=` with counts."
        )
    total = np.asarray(x.sum(1)).reshape(-1)
    scale = (1e4 / np.where(total > 0, total, 1.0)).astype(np.float32)
    if sp.issparse(x):
        x = sp.diags(scale) @ x
        x.data = np.log1p(x.data)
        return x.tocsr()
    return np.log1p(x * scale[:, None])


def _dense_rows(x: sp.csr_matrix | np.ndarray, rows: np.ndarray) -> np.ndarray:
    block = x[rows]
    return block.toarray() if sp.issparse(block) else np.asarray(block)


def _torch_mlp(clf: Any) -> nn.Sequential:
    """The fitted scikit-learn ``MLPClassifier`` or ``LogisticRegression`` as a torch network (logits)."""
    if hasattr(clf, "coefs_"):
        coefs, intercepts = clf.coefs_, clf.intercepts_
        if clf.activation != "relu":
            raise ValueError("Only ReLU MLPs are supported.")
    else:
        coefs, intercepts = [clf.coef_.T], [clf.intercept_]
    layers: list[nn.Module] = []
    for i, (w, b) in enumerate(zip(coefs, intercepts, strict=True)):
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w.T, dtype=torch.float32))
            lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        layers.append(lin)
        if i < len(coefs) - 1:
            layers.append(nn.ReLU())
    if coefs[-1].shape[1] == 1:
        raise ValueError("Binary classifiers are not supported; use at least three labels.")
    return nn.Sequential(*layers)


def _cross_entropy(net: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(net(tensors["x"]), tensors["y"], reduction="none")


def _fisher(net: nn.Module, x, rows: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per-sample Fisher of the cross-entropy over ``rows`` of ``x``, densified one minibatch at a time."""
    yt = torch.as_tensor(y, dtype=torch.long)
    batches = (
        {"x": torch.as_tensor(_dense_rows(x, rows[s : s + batch_size])), "y": yt[s : s + batch_size]}
        for s in range(0, len(rows), batch_size)
    )
    fisher = module_diagonal(net, batches, per_cell_loss=_cross_entropy, loss="cross_entropy")
    return dict(fisher)


def _category_table(net: nn.Sequential) -> pd.DataFrame:
    linear = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    rows = []
    for name, p in net.named_parameters():
        cat = "output" if name.rsplit(".", 1)[0] == linear[-1] else "hidden"
        rows.append((name, cat, None, None, p.numel(), tuple(p.shape)))
    table = pd.DataFrame(rows, columns=["parameter", "category", "col_start", "col_stop", "n_params", "shape"])
    table["col_start"] = table["col_start"].astype("Int64")
    table["col_stop"] = table["col_stop"].astype("Int64")
    return table


def classifier_baseline(
    adata: AnnData,
    labels_key: str,
    forget_label: str,
    *,
    model: BaseModelClass | None = None,
    forget: CellSpec | None = None,
    cells: CellSpec | None = None,
    layer: str | None = None,
    n_hidden: int | None = None,
    n_layers: int | None = None,
    max_iter: int = 200,
    damping: float = 1e-8,
    null: Literal["random"] | None = "random",
    n_null: int = 5,
    seed: int | None = None,
) -> ClassifierBaseline:
    """Fisher overlap of cell-type classifiers for a forget class, the comparison the study made, done fairly.

    The reference study contrasted the VAE's forget/retain Fisher overlap with that of a linear
    probe on frozen VAE latents, whose inputs, loss and output structure all differ from the VAE's,
    so the contrast could not say whether the VAE or the comparison was unusual. This baseline fits,
    on the same training cells:

    - ``"linear_probe"``: multinomial logistic regression on the VAE's standardised posterior
      means (the study's control; needs ``model``);
    - ``"mlp"``: a ReLU classifier on the log-normalised counts of the VAE's genes (the VAE's
      encoder input), with the VAE's hidden width and depth, trained by scikit-learn's Adam with
      early stopping on a held-out 10%.

    For each, the per-sample empirical Fisher of the cross-entropy with the true labels is
    computed on the forget cells and on the other training cells, and compared with the same
    statistics and null reference as :func:`~scforget.fisher.overlap`.

    Parameters
    ----------
    adata
        Cells with raw counts in ``X`` (or ``layer``) and labels in ``obs[labels_key]``. With
        ``model``, it must hold the model's cells in the same order (usually ``model.adata``).
    labels_key
        Column of ``adata.obs`` with the class labels (at least three classes).
    forget_label
        The class of the forget cells.
    model
        A trained scvi-tools model: its genes are used for the MLP and its latents for the probe.
    forget
        The forget cells; default: the training cells labelled ``forget_label``.
    cells
        The training cells of the classifiers; default: the model's training cells, or all cells.
    layer
        Layer of ``adata`` holding counts.
    n_hidden, n_layers
        MLP width and depth; default: the VAE's (or 128 and 1).
    max_iter
        Maximum epochs of the MLP.
    damping
        Added to every Fisher value.
    null
        ``"random"`` (random subsets of the other cells of the forget set's size) or ``None``.
    n_null
        Number of random subsets.
    seed
        Seed of training and of the null subsets; ``None`` follows :attr:`scvi.settings.seed`.

    Returns
    -------
    A :class:`ClassifierBaseline`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    from scforget._core import init_kwargs
    from scforget.data import as_positions

    seed = resolve_seed(seed)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    n_null = check_int(n_null, "n_null", minimum=1)
    damping = check_number(damping, "damping", minimum=0)
    if labels_key not in adata.obs:
        raise KeyError(f"`labels_key` {labels_key!r} is not a column of adata.obs.")
    labels = adata.obs[labels_key].astype(str).to_numpy()
    if str(forget_label) not in set(labels):
        raise ValueError(f"`forget_label` {forget_label!r} is not a value of adata.obs[{labels_key!r}].")
    if null not in ("random", None):
        raise ValueError(f"`null` must be 'random' or None; got {null!r}.")
    if model is not None and not np.array_equal(np.asarray(model.adata.obs_names), np.asarray(adata.obs_names)):
        raise ValueError("With `model`, `adata` must hold the model's cells in the same order (pass model.adata).")
    if cells is not None:
        train = as_positions(cells, adata.obs_names, argument="cells")
    elif model is not None and getattr(model, "train_indices", None) is not None:
        train = np.unique(np.asarray(model.train_indices, dtype=np.int64))
    else:
        train = np.arange(adata.n_obs)
    f_pos = (
        train[labels[train] == str(forget_label)]
        if forget is None
        else as_positions(forget, adata.obs_names, argument="forget")
    )
    if np.setdiff1d(f_pos, train).size:
        raise ValueError("Some `forget` cells are not among the classifiers' training `cells`.")
    r_pos = np.setdiff1d(train, f_pos)
    classes, y_all = np.unique(labels[train], return_inverse=True)
    if classes.size < 3:
        raise ValueError(f"adata.obs[{labels_key!r}] needs at least three classes among the training cells.")
    y_of = dict(zip(train, y_all, strict=True))
    y_f = np.array([y_of[i] for i in f_pos])
    y_r = np.array([y_of[i] for i in r_pos])

    hidden = n_hidden or (init_kwargs(model).get("n_hidden", 128) if model is not None else 128)
    depth = n_layers or (init_kwargs(model).get("n_layers", 1) if model is not None else 1)
    genes = model.adata.var_names if model is not None else None
    inputs = {"mlp": _log_normalised(adata, genes, layer)}
    if model is not None:
        mu = np.asarray(model.get_latent_representation(indices=np.arange(adata.n_obs), give_mean=True))
        inputs["linear_probe"] = StandardScaler().fit(mu[train]).transform(mu).astype(np.float32)

    tables, acc, fitted = [], {}, {}
    for name in ("linear_probe", "mlp"):
        if name not in inputs:
            continue
        x = inputs[name]
        y_train = np.array([y_of[i] for i in train])
        x_train = x[train]
        if name == "mlp":
            clf = MLPClassifier(
                hidden_layer_sizes=(int(hidden),) * int(depth),
                batch_size=128,
                learning_rate_init=1e-3,
                max_iter=max_iter,
                early_stopping=True,
                validation_fraction=0.1,
                n_iter_no_change=10,
                random_state=seed,
            )
        else:
            clf = LogisticRegression(max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            clf.fit(x_train, y_train)
            if name == "mlp":
                validation = float(clf.best_validation_score_)
            else:
                fit_idx, val_idx = train_test_split(np.arange(train.size), test_size=0.1, random_state=seed)
                probe = LogisticRegression(max_iter=2000).fit(x[train[fit_idx]], y_train[fit_idx])
                validation = float(probe.score(x[train[val_idx]], y_train[val_idx]))
        if len(clf.classes_) != classes.size:
            raise ValueError("Some classes have no cells in the classifiers' fitting split; use more cells.")
        acc[name] = {"train": float(clf.score(x_train, y_train)), "validation": validation}
        fitted[name] = clf
        net = _torch_mlp(clf)
        ff = _fisher(net, x, f_pos, y_f)
        fr = _fisher(net, x, r_pos, y_r)
        pairs = []
        if null == "random":
            rng = np.random.default_rng(seed)
            for _ in range(int(n_null)):
                sub = rng.choice(len(r_pos), size=len(f_pos), replace=False)
                fs = _fisher(net, x, r_pos[sub], y_r[sub])
                pairs.append((fs, complement(fr, len(r_pos), fs, len(f_pos))))
        t = overlap_table(ff, fr, _category_table(net), damping=damping, null_pairs=pairs, order=("hidden", "output"))
        t.index = pd.MultiIndex.from_product([[name], t.index], names=["model", "category"])
        tables.append(t)
    return ClassifierBaseline(
        table=pd.concat(tables), accuracy=pd.DataFrame(acc).T.rename_axis("model"), classifiers=fitted
    )
