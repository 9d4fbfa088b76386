"""Plots in the scanpy style, drawn from plain arrays and tables.

Every function takes ``show`` (``None`` follows ``scanpy.settings.autoshow``) and ``save`` (``True``
or a filename suffix, saved into ``scanpy.settings.figdir``) and returns its Axes unless the figure
was shown. Reports call these: :meth:`scforget.privacy.AuditReport.plot_roc` and
:meth:`~scforget.privacy.AuditReport.plot_scores`, :meth:`scforget.fisher.FisherOverlap.plot_scatter`
and :meth:`~scforget.fisher.FisherOverlap.plot_categories`.
"""

from ._benchmark import attack_heatmap, privacy_utility, time_ratios
from ._fisher import fisher_categories, fisher_scatter
from ._roc import roc, scores

__all__ = [
    "attack_heatmap",
    "fisher_categories",
    "fisher_scatter",
    "privacy_utility",
    "roc",
    "scores",
    "time_ratios",
]
