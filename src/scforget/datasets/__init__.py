"""Real single-cell data: bundled and downloadable."""

from ._pbmc import pbmc3k, pbmc33k

__all__ = ["pbmc3k", "pbmc33k"]
