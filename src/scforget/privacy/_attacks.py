"""Attacks turning per-cell signals into membership scores (higher = member)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

#: Attack names accepted by :func:`scforget.privacy.audit`.
ATTACKS = ("loss", "kl", "classifier", "distance", "lira", "rmia")
#: Attacks that read reference models (trained once and shared).
REFERENCE_ATTACKS = ("lira", "rmia")
#: Classifier families of the ``classifier`` attack.
CLASSIFIERS = ("logistic", "mlp")


def loss_scores(sig: pd.DataFrame) -> np.ndarray:
    """Threshold attack on the NB reconstruction log-likelihood per count: a better fit means member.

    The log-likelihood of a cell scales with its sequencing depth, which varies several-fold
    between cells of one type and would swamp the membership signal of a single global threshold;
    dividing by the total counts puts cells of different depth on one scale.
    """
    return sig["recon_ll_per_count"].to_numpy(dtype=np.float64)


def kl_scores(sig: pd.DataFrame) -> np.ndarray:
    """Threshold attack on the KL to the prior: a posterior further from the prior means member.

    Training pushes the encoder to spend more information (KL) on cells it has fitted.
    """
    return sig["kl"].to_numpy(dtype=np.float64)


def distance_scores(sig: pd.DataFrame) -> np.ndarray:
    """Latent nearest-neighbour attack: closer to the training cells means member."""
    return -sig["knn_distance"].to_numpy(dtype=np.float64)


def classifier_features(sig: pd.DataFrame) -> np.ndarray:
    """Attack features: the scalar signals, posterior means and log posterior variances."""
    cols = ["recon_ll", "kl", "elbo", "qz_mean_norm", "qz_var_norm"]
    if sig["knn_distance"].notna().all():
        cols.append("knn_distance")
    feats = [sig[cols].to_numpy(dtype=np.float64)]
    mean_cols = [c for c in sig.columns if c.startswith("qz_mean_") and c != "qz_mean_norm"]
    var_cols = [c for c in sig.columns if c.startswith("qz_var_") and c != "qz_var_norm"]
    if mean_cols:
        feats.append(sig[mean_cols].to_numpy(dtype=np.float64))
    if var_cols:
        feats.append(np.log(sig[var_cols].to_numpy(dtype=np.float64) + 1e-12))
    return np.hstack(feats)


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold id of every cell from a shuffled stratified K-fold split.

    With ``groups`` (e.g. donors) every group falls in one fold, so the classifier never scores a
    cell of a donor whose other cells it was fitted on (it would learn the donor, not membership).
    """
    folds = np.empty(labels.size, dtype=np.int64)
    if groups is None:
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        skf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for f, (_, test) in enumerate(skf.split(np.zeros(labels.size), labels, groups)):
        folds[test] = f
    return folds


def make_classifier(kind: str, seed: int):
    """A fresh, unfitted classifier pipeline (scaler fitted inside, on the training fold only)."""
    if kind == "logistic":
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    elif kind == "mlp":
        clf = SpectralMLP(seed=seed)
    else:
        raise ValueError(f"`classifier` must be one of {CLASSIFIERS}; got {kind!r}.")
    return make_pipeline(StandardScaler(), clf)


def cross_fit(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Out-of-fold scores: each cell is scored by a classifier fitted on the other folds only."""
    scores = np.empty(labels.size, dtype=np.float64)
    for f in np.unique(folds):
        test = folds == f
        model = make_classifier(kind, seed + int(f))
        model.fit(features[~test], labels[~test])
        scores[test] = model.decision_function(features[test])
    return scores


def classifier_scores(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_folds: int,
    seed: int,
    kind: str = "logistic",
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted classifier attack; returns ``(out_of_fold_scores, fold_ids)`` (folds by ``groups`` if given)."""
    labels = np.asarray(labels, dtype=np.int64)
    folds = stratified_folds(labels, n_folds, seed, groups)
    return cross_fit(features, labels, folds, kind, seed), folds


class SpectralMLP(ClassifierMixin, BaseEstimator):
    """Small MLP with spectral normalisation and class-weighted BCE, scikit-learn style.

    Two hidden layers of ``n_hidden`` units with ReLU and dropout, spectral normalisation on every
    linear layer (as in the reference study's attacker), full-batch Adam.

    Parameters
    ----------
    n_hidden
        Units per hidden layer.
    dropout
        Dropout rate.
    n_epochs
        Full-batch optimisation steps.
    lr
        Adam learning rate.
    weight_decay
        Adam weight decay.
    seed
        Seed of initialisation and dropout; ``None`` follows :attr:`scvi.settings.seed`.
    """

    def __init__(
        self,
        n_hidden: int = 64,
        dropout: float = 0.3,
        n_epochs: int = 200,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        seed: int | None = None,
    ):
        self.n_hidden = n_hidden
        self.dropout = dropout
        self.n_epochs = n_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> SpectralMLP:
        """Fit on features ``X`` and binary labels ``y``."""
        import torch
        from torch import nn
        from torch.nn.utils.parametrizations import spectral_norm

        from scforget._core import resolve_seed, seeded

        with seeded(resolve_seed(self.seed)):
            d = X.shape[1]
            self.net_ = nn.Sequential(
                spectral_norm(nn.Linear(d, self.n_hidden)),
                nn.ReLU(),
                nn.Dropout(self.dropout),
                spectral_norm(nn.Linear(self.n_hidden, self.n_hidden)),
                nn.ReLU(),
                nn.Dropout(self.dropout),
                spectral_norm(nn.Linear(self.n_hidden, 1)),
            )
            xt = torch.as_tensor(X, dtype=torch.float32)
            yt = torch.as_tensor(y, dtype=torch.float32)
            n_pos = float(yt.sum())
            pos_weight = torch.tensor((yt.numel() - n_pos) / max(n_pos, 1.0))
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
            opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            self.net_.train()
            for _ in range(self.n_epochs):
                opt.zero_grad()
                loss = loss_fn(self.net_(xt).squeeze(-1), yt)
                loss.backward()
                opt.step()
            self.net_.eval()
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logit of membership."""
        import torch

        with torch.inference_mode():
            return self.net_(torch.as_tensor(X, dtype=torch.float32)).squeeze(-1).numpy().astype(np.float64)
