"""``scforget benchmark`` with two variants of rewind's defaults registered (here only, never in the package).

Usage::

    python benchmarks/rewind_variants.py benchmark --methods rewind rw_lr5e3 rw_20pct [benchmark flags]

The choice of the package default was written before the run: the configuration that meets the
benchmark target on the most of pbmc3k DC, NK and B (3 baseline x 5 unlearning seeds); ties go to
the lowest mean time ratio. Designs the default was not tuned on are run with the default only.

Second run (``rewind3_dcnkb``, checkpoint default moved from 5% to 3% of the epochs before the run,
on a one-seed proxy: LiRA on B fell from 0.591 to 0.567 at +0.6 points of held-out NLL): ``rewind``
against ``rw_lr5e3`` only, same rule. If no configuration meets the target on B, the checkpoint
default goes back to 5% (the smaller utility cost) and B is reported as not met.
"""

from __future__ import annotations

import sys

from scforget.benchmark._cli import main
from scforget.methods._registry import register
from scforget.methods._rewind import RewindPlan, _check, _runner

#: name: (learning rate, fine-tuning epochs as a share of the training epochs)
VARIANTS = {"rw_lr5e3": (5e-3, 0.15), "rw_20pct": (3e-3, 0.20)}


def _plan(lr_default: float) -> type[RewindPlan]:
    class Variant(RewindPlan):
        def __init__(self, module, *, lr: float = lr_default, max_kl_weight: float | None = None, **kwargs):
            super().__init__(module, lr=lr, max_kl_weight=max_kl_weight, **kwargs)

    return Variant


for _name, (_lr, _share) in VARIANTS.items():
    register(
        _name,
        plan=_plan(_lr),
        runner=_runner,
        check=_check,
        default_epochs=lambda e, s=_share: max(1, round(s * e)),
        description=f"rewind with lr={_lr:g} and {_share:.0%} of the training epochs",
    )

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
