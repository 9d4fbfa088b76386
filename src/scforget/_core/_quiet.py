"""Keep notebooks quiet while scforget trains: progress bars stay, Lightning's chatter goes."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

#: Loggers of Lightning's rank-zero messages (accelerator banners, tips, "`Trainer.fit` stopped").
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
#: Warnings that say nothing actionable about an scforget run.
_NOISE = (
    (FutureWarning, r".*LeafSpec.*"),
    # Opacus: the benchmark's DP rows are experiments (secure RNG off); the accountant's alpha range
    (UserWarning, r".*Secure RNG turned off.*"),
    (UserWarning, r".*Optimal order is the largest alpha.*"),
    (UserWarning, r".*does not have many workers.*"),
    (UserWarning, r".*GPU available but not used.*"),
    (UserWarning, r".*log_every_n_steps.*"),
    # Opacus' hooks on the first layer, whose input (the counts) needs no gradient
    (UserWarning, r".*Full backward hook is firing when gradients are computed with respect to module outputs.*"),
)


@contextlib.contextmanager
def quiet_training() -> Iterator[None]:
    """Silence Lightning's informational lines unless ``scvi.settings.verbosity`` asks for debug output.

    Accelerator banners, the logger tip and the "`Trainer.fit` stopped" line are logged by Lightning
    at INFO level; they show only when :attr:`scvi.settings.verbosity` is ``logging.DEBUG`` or lower.
    Warnings are kept, except a few that carry no information for scforget users (a deprecation inside
    Lightning, the data-loader worker hint). Progress bars are unaffected.
    """
    import scvi

    verbose = int(scvi.settings.verbosity) <= logging.DEBUG
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        if not verbose:
            for lg in loggers:
                lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        for category, message in _NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


@contextlib.contextmanager
def quiet_setup() -> Iterator[None]:
    """Silence scvi-tools' INFO lines for set-up done on the user's behalf (setup transfer, file reads).

    They show again when :attr:`scvi.settings.verbosity` is ``logging.DEBUG`` or lower.
    """
    import scvi

    logger = logging.getLogger("scvi")
    level = logger.level
    if int(scvi.settings.verbosity) > logging.DEBUG:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
