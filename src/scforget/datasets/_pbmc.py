"""Real PBMC count matrices from 10x Genomics."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
from importlib.resources import as_file, files
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

PBMC33K_URL = "https://cf.10xgenomics.com/samples/cell-exp/1.1.0/pbmc33k/pbmc33k_filtered_gene_bc_matrices.tar.gz"
#: SHA-256 of the 10x archive. ``None`` until it is pinned from a verified download: the first
#: download then records the digest beside the file and every later load is checked against it.
PBMC33K_SHA256: str | None = None


def pbmc3k() -> ad.AnnData:
    """The 10x Genomics "3k PBMCs from a healthy donor" raw counts, bundled with the package.

    2,700 cells by the 13,714 genes detected in at least three cells (hg19), raw integer UMI
    counts in a sparse ``X``. ``obs`` holds ``cell_type`` (CD4 T, CD14+ Mono, B, CD8 T,
    FCGR3A+ Mono, NK, DC, Platelet, and ``low_quality`` for cells failing QC), ``qc_pass`` and
    ``leiden``. Loads offline in well under a second.

    The cell-type labels were derived for this project (Seurat-style QC, Leiden clustering,
    canonical marker genes: platelets by PPBP/PF4, dendritic cells by FCER1A/CST3); they are close
    to the widely used Seurat tutorial's annotation but are not an official one.

    Data: 10x Genomics, "3k PBMCs from a Healthy Donor" (Chromium v1, Cell Ranger 1.1.0),
    https://www.10xgenomics.com/datasets, licensed CC BY 4.0. Cite 10x Genomics when you use it.

    Returns
    -------
    A new AnnData each call (safe to modify).

    Examples
    --------
    >>> adata = scforget.datasets.pbmc3k()
    >>> adata = adata[adata.obs["qc_pass"]].copy()
    """
    resource = files("scforget.datasets") / "_data" / "pbmc3k_counts.h5ad"
    with as_file(resource) as path:
        adata = ad.read_h5ad(path)
    adata.uns["scforget_dataset"] = {"name": "pbmc3k", "source": "10x Genomics", "license": "CC BY 4.0"}
    return adata


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(archive: Path, sha256: str | None) -> None:
    digest = _sha256(archive)
    sidecar = archive.with_name(archive.name + ".sha256")
    expected = sha256 or (sidecar.read_text().strip() if sidecar.exists() else None)
    if expected is None:
        sidecar.write_text(digest + "\n")
        warnings.warn(
            f"No checksum is pinned for {archive.name}; recorded SHA-256 {digest} in {sidecar.name} and "
            "will verify against it from now on. Pass `sha256=` to pin a known digest.",
            UserWarning,
            stacklevel=3,
        )
        return
    if digest != expected:
        raise OSError(
            f"Checksum mismatch for {archive}: expected SHA-256 {expected}, got {digest}. "
            "Delete the file to download it again."
        )


def _read_10x_mtx_tar(archive: Path) -> ad.AnnData:
    """Read the matrix.mtx/genes.tsv/barcodes.tsv triplet from a 10x v1 archive."""
    import scanpy as sc

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        mtx = sorted(Path(tmp).rglob("matrix.mtx*"))
        if not mtx:
            raise OSError(f"{archive} holds no matrix.mtx; is it a 10x filtered_gene_bc_matrices archive?")
        adata = sc.read_10x_mtx(mtx[0].parent, var_names="gene_symbols", make_unique=True, cache=False)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def pbmc33k(
    save_path: str | os.PathLike = "data/",
    *,
    url: str = PBMC33K_URL,
    sha256: str | None = PBMC33K_SHA256,
) -> ad.AnnData:
    """The 10x Genomics "33k PBMCs from a healthy donor" raw counts used by the reference study.

    Downloads the filtered gene-barcode matrices (hg19, about 33,000 cells by 32,738 genes) once
    into ``save_path`` and reads them as raw integer counts. The archive is checked against
    ``sha256`` when given; otherwise the first download records its digest beside the file and
    later loads are verified against that record.

    Data: 10x Genomics, "33k PBMCs from a Healthy Donor" (Cell Ranger 1.1.0), licensed CC BY 4.0.

    Parameters
    ----------
    save_path
        Directory that holds (or will hold) ``pbmc33k_filtered_gene_bc_matrices.tar.gz``.
    url
        Where to download the archive from (a ``file://`` URL works for local mirrors).
    sha256
        Expected SHA-256 of the archive.

    Returns
    -------
    AnnData with raw counts in ``X`` (sparse float32) and gene symbols as ``var_names``.
    """
    save_path = Path(save_path)
    save_path.mkdir(parents=True, exist_ok=True)
    archive = save_path / "pbmc33k_filtered_gene_bc_matrices.tar.gz"
    if not archive.exists():
        logger.info("Downloading %s to %s", url, archive)
        part = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as e:
            part.unlink(missing_ok=True)
            raise OSError(
                f"Could not download {url} ({e}). Download it by hand into {save_path} and call again."
            ) from e
        part.rename(archive)
    _verify(archive, sha256)
    adata = _read_10x_mtx_tar(archive)
    adata.uns["scforget_dataset"] = {"name": "pbmc33k", "source": "10x Genomics", "license": "CC BY 4.0"}
    return adata
