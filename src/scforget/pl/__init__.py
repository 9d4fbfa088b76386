"""Plots in the scanpy style: functions return the Axes (or Figure) and take ``show=`` and ``save=``."""

from ._audit import roc, scores

__all__ = ["roc", "scores"]
