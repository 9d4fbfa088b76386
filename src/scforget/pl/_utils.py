"""scanpy's plotting convention: ``show`` follows ``scanpy.settings.autoshow``, ``save`` writes into ``figdir``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from scforget._core import check_bool

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_EXTENSIONS = (".svg", ".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".eps")


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax``, or the Axes of a new figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def figure_path(writekey: str, save: bool | str) -> Path:
    """Where scanpy would save a figure: ``figdir / f"{writekey}{suffix}{plot_suffix}.{ext}"``.

    ``save=True`` uses scanpy's default format; a string is a suffix after the plot's name and may end
    in an extension that sets the format (``save="_dc.pdf"`` writes ``roc_dc.pdf``), as in scanpy.
    """
    import scanpy as sc

    suffix, ext = "", sc.settings.file_format_figs
    if isinstance(save, str):
        suffix = save
        for candidate in _EXTENSIONS:
            if save.endswith(candidate):
                suffix, ext = save[: -len(candidate)], candidate[1:]
                break
    return Path(sc.settings.figdir) / f"{writekey}{suffix}{sc.settings.plot_suffix}.{ext}"


def finish(obj: Axes | list[Axes], *, writekey: str, show: bool | None, save: bool | str | None) -> Any:
    """Save and show a plot as scanpy does; return the Axes (or list of Axes) unless it was shown.

    Parameters
    ----------
    obj
        The Axes (or list of Axes) drawn.
    writekey
        The plot's name, the start of the saved file's name.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        ``True`` or a filename suffix: save into ``scanpy.settings.figdir`` (see :func:`figure_path`).
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    if show is not None:
        show = check_bool(show, "show")
    if save is not None and not isinstance(save, str):
        save = check_bool(save, "save")
    fig = (obj[0] if isinstance(obj, list) else obj).figure
    if save:
        path = figure_path(writekey, save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")  # dpi: matplotlib's savefig.dpi, which sc.set_figure_params sets
    if sc.settings.autoshow if show is None else show:
        plt.show()
        return None
    return obj
