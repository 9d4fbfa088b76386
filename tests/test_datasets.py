import io
import tarfile

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import scforget as sf


def test_pbmc3k_bundled_loads_with_labels():
    adata = sf.datasets.pbmc3k()
    assert adata.shape == (2700, 13714)
    assert sp.issparse(adata.X)
    x = adata.X[:200].toarray()
    assert np.all(x == np.round(x)) and x.min() >= 0  # raw integer counts
    assert {"DC", "Platelet", "CD4 T"} <= set(adata.obs["cell_type"])
    assert int((adata.obs["cell_type"] == "DC").sum()) == 36


def _tiny_10x_archive(path):
    """A tiny archive in the 10x v1 filtered_gene_bc_matrices layout."""
    rng = np.random.default_rng(0)
    counts = sp.random(6, 4, density=0.6, random_state=0, data_rvs=lambda n: rng.integers(1, 9, n)).tocoo()
    files = {
        "matrix.mtx": None,
        "genes.tsv": "".join(f"ENSG{i}\tGENE{i}\n" for i in range(6)).encode(),
        "barcodes.tsv": "".join(f"BC{i}-1\n" for i in range(4)).encode(),
    }
    buf = io.BytesIO()
    scipy.io.mmwrite(buf, counts)
    files["matrix.mtx"] = buf.getvalue()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"filtered_gene_bc_matrices/hg19/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return counts.toarray().T


def test_pbmc33k_reads_local_archive_and_verifies_checksum(tmp_path):
    src = tmp_path / "mirror.tar.gz"
    expected = _tiny_10x_archive(src)
    dest = tmp_path / "cache"
    with pytest.warns(UserWarning, match="No checksum is pinned"):
        adata = sf.datasets.pbmc33k(dest, url=src.as_uri())
    assert adata.shape == (4, 6)
    np.testing.assert_array_equal(adata.X.toarray(), expected)
    # second load: verified against the recorded digest, no warning, no download
    src.unlink()
    adata2 = sf.datasets.pbmc33k(dest, url=src.as_uri())
    assert adata2.shape == (4, 6)
    # a wrong pinned checksum fails loudly
    with pytest.raises(OSError, match="Checksum mismatch"):
        sf.datasets.pbmc33k(dest, url=src.as_uri(), sha256="0" * 64)


def test_pbmc33k_unreachable_url_says_what_to_do(tmp_path):
    with pytest.raises(OSError, match="Download it by hand"):
        sf.datasets.pbmc33k(tmp_path, url=(tmp_path / "missing.tar.gz").as_uri())
