"""One progress bar over a whole benchmark run (design / method / seed), with lines printed above it."""

from __future__ import annotations


class Progress:
    """A tqdm bar (scvi-tools' progress library) whose steps name the model being made.

    Parameters
    ----------
    total
        Number of models the run makes.
    enabled
        Show the bar and the lines; otherwise everything goes to the ``scforget`` logger at INFO.
    """

    def __init__(self, total: int, *, enabled: bool = True):
        import logging

        from tqdm.auto import tqdm

        self._log = logging.getLogger("scforget.benchmark")
        self._bar = tqdm(total=total, unit="model", dynamic_ncols=True, disable=not enabled)
        self._enabled = enabled
        self._started = False

    def step(self, description: str) -> None:
        """Count the previous step as done and show what runs now."""
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_description_str(description)
        self._log.info(description)

    def say(self, line: str) -> None:
        """Print a line above the bar."""
        if self._enabled:
            self._bar.write(line)
        self._log.info(line)

    def close(self) -> None:
        """Count the last step and close the bar."""
        if self._started:
            self._bar.update(1)
        self._bar.close()
