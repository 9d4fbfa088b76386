"""Docstring fragments of the plotting functions."""

DOC_SHOW_SAVE = """\
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        ``True`` or a filename suffix: save into ``scanpy.settings.figdir`` (scanpy's convention)."""

DOC_TITLE_AX = """\
    title
        Title of the plot (say which model, forget set or attack it shows).
    ax
        Axes to draw into; a new figure otherwise."""
