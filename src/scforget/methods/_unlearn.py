"""The ``unlearn()`` entry point: validate everything, copy the model, run the method, record."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from scforget._core import (
    UNLEARN_CLASSES,
    accepted_keywords,
    check_bool,
    check_counts,
    check_int,
    check_model,
    clone_model,
    close_matches,
    has_batchnorm,
    package_versions,
    quiet_training,
    record_cell_order,
    resolve_seed,
    seeded,
    training_positions,
    training_recipe,
    validation_positions,
    warn,
    with_ddp_strategy,
)
from scforget.data import as_positions

from ._checkpoint import CHECKPOINT_ATTR, RewindCheckpoint
from ._context import UnlearnContext
from ._private import PRIVACY_ATTR, check_private_strategy
from ._record import RECORDS_ATTR, _key_bytes, make_record, request_fields
from ._registry import MethodSpec, default_params, get_method

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

    from scforget.data import CellSpec

M = TypeVar("M", bound="BaseModelClass")

_EXPLICIT = {"max_epochs", "accelerator", "devices", "batch_size", "seed", "inplace", "retain", "plan_kwargs"}


def _trainer_keywords() -> set[str]:
    import lightning.pytorch as pl
    from scvi.train import Trainer

    names, _ = accepted_keywords(Trainer.__init__, pl.Trainer.__init__)
    return names - {"max_epochs", "accelerator", "devices"}


def _route_kwargs(spec: MethodSpec, plan_kwargs: dict | None, kwargs: dict) -> tuple[dict, dict]:
    """Split keyword arguments into the method's hyper-parameters and Trainer arguments; refuse the rest."""
    if plan_kwargs is not None and not isinstance(plan_kwargs, dict):
        raise TypeError(f"`plan_kwargs` must be a dict of hyper-parameters or None; got {type(plan_kwargs).__name__}.")
    params = dict(plan_kwargs or {})
    for key in params:
        if key not in spec.params:
            raise TypeError(
                f"Unknown keyword {key!r} in `plan_kwargs` for method {spec.name!r}."
                f"{close_matches(key, spec.params)} Accepted: {', '.join(sorted(spec.params))}."
            )
    trainer_names = _trainer_keywords()
    trainer_kwargs = {}
    for key, value in kwargs.items():
        if key in spec.params:
            if key in params:
                raise TypeError(f"{key!r} was given both as a keyword and in `plan_kwargs`; give it once.")
            params[key] = value
        elif key in trainer_names:
            trainer_kwargs[key] = value
        elif key == "adata":
            raise TypeError(
                "unlearn() takes no AnnData: it works on the cells of the model's own AnnData (`model.adata`). "
                "Pass the cells to forget as obs names, positions or a boolean mask of that AnnData."
            )
        else:
            raise TypeError(
                f"Unknown keyword argument {key!r} for unlearn(method={spec.name!r})."
                f"{close_matches(key, set(spec.params) | trainer_names | _EXPLICIT)} It is neither a "
                f"parameter of {spec.name!r} ({', '.join(sorted(spec.params)) or 'none'}) nor a Trainer argument."
            )
    if "gradient_clip_val" in trainer_kwargs and spec.plan is not None:
        raise TypeError(
            f"Pass `clip_grad_norm=` (a hyper-parameter of {spec.name!r}) instead of the Trainer's "
            "`gradient_clip_val`: the plan clips its own steps, and two clipping settings would conflict."
        )
    return params, with_ddp_strategy(trainer_kwargs)


def _check_scheduler(spec: MethodSpec, params: dict, validation: np.ndarray) -> None:
    """``reduce_lr_on_plateau`` needs a validation metric computed on validation cells."""
    if spec.plan is None or not params.get("reduce_lr_on_plateau", False):
        return
    metric = str(params.get("lr_scheduler_metric", spec.defaults.get("lr_scheduler_metric", "elbo_validation")))
    if "validation" not in metric:
        raise ValueError(
            f"With `reduce_lr_on_plateau=True`, unlearning plans schedule on a validation metric; "
            f"`lr_scheduler_metric={metric!r}` is a training metric they do not log. Use e.g. 'elbo_validation'."
        )
    if validation.size == 0:
        raise ValueError(
            "`reduce_lr_on_plateau=True` needs validation cells, but the model has none (outside the forget set). "
            "Train the model with a validation split, or drop `reduce_lr_on_plateau`."
        )


def _check_design(model: Any, spec: MethodSpec) -> None:
    """Refuse a method on a kind of model it does not run on, naming the methods that do."""
    from ._registry import _REGISTRY

    design = getattr(model, "deletion_design", None) or "scvi"
    if design in spec.designs:
        return
    fitting = sorted(s.name for s in _REGISTRY.values() if design in s.designs)
    if design == "scvi":
        needs = {"sharded": "scforget.model.ShardedSCVI", "adapters": "scforget.model.AdapterSCVI"}
        built = " or ".join(needs.get(d, d) for d in spec.designs)
        raise TypeError(f"Method {spec.name!r} needs a model built for deletion ({built}); this is a plain model.")
    raise TypeError(
        f"A {type(model).__name__} is unlearned with {', '.join(map(repr, fitting))}; method {spec.name!r} does not "
        "apply to it."
    )


def _retain_positions(retain: CellSpec | None, train: np.ndarray, forget: np.ndarray, names) -> np.ndarray:
    if retain is None:
        out = np.setdiff1d(train, forget)
        if out.size == 0:
            raise ValueError("`forget` covers every training cell, so nothing would remain; train a new model instead.")
        return out
    out = as_positions(retain, names, argument="retain")
    both = np.intersect1d(out, forget)
    if both.size:
        raise ValueError(f"{both.size} cell(s) are in both `retain` and `forget`; the two sets must be disjoint.")
    never = np.setdiff1d(out, train)
    if never.size:
        raise ValueError(
            f"{never.size} of the `retain` cells were never training cells of this model. Unlearning may only keep "
            "training on cells the model trained on (otherwise `train_indices` would no longer say which cells it "
            "learned from); drop them from `retain`."
        )
    return out


def unlearn(
    model: M,
    forget: CellSpec,
    method: str = "finetune",
    *,
    inplace: bool = False,
    retain: CellSpec | None = None,
    seed: int | None = None,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    plan_kwargs: dict | None = None,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    key: bytes | str | None = None,
    **kwargs: Any,
) -> M:
    """Remove cells from a trained scvi-tools model.

    Works on scforget's model classes and on stock :class:`scvi.model.SCVI` / :class:`scvi.model.CondSCVI`
    alike (SCANVI and TOTALVI are not supported: unlearn the scVI model a SCANVI was built from, then
    rebuild it with :meth:`scvi.model.SCANVI.from_scvi_model`). Every input is validated before any
    work starts; the input model and its AnnData are left untouched unless ``inplace=True``.

    Parameters
    ----------
    model
        A trained scvi-tools model.
    forget
        The cells to forget: positions, a boolean mask, obs names or a boolean Series (see
        :func:`scforget.data.as_positions`). Cells that were never training cells are dropped with
        a warning.
    method
        A registered method (see :func:`scforget.methods.available`).
    inplace
        Modify ``model`` itself instead of returning a modified copy.
    retain
        The retain cells used by the method (training cells only); defaults to all training cells not
        in ``forget``.
    seed
        Seed of the run; ``None`` follows :attr:`scvi.settings.seed`. The caller's random state is
        restored afterwards.
    max_epochs
        Epoch budget; defaults to the method's default (e.g. 10% of the training epochs for
        fine-tuning, all of them for ``retrain``).
    batch_size
        Minibatch size of retain cells; defaults to the model's training batch size.
    plan_kwargs
        Hyper-parameters of the method (for training methods: arguments of its TrainingPlan).
    accelerator
        Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``, ...).
    devices
        Lightning devices.
    key
        A secret the data steward keeps (at least 16 bytes; e.g. ``secrets.token_hex(32)``). The
        record then holds digests of the request keyed by it, which
        :func:`scforget.methods.verify_forgotten` checks; the key is never stored. Without a key the
        record holds only counts.
    **kwargs
        Hyper-parameters of the method (same as ``plan_kwargs``) or arguments of
        :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar``, ``early_stopping``). Anything
        else raises a ``TypeError`` before training.

    Returns
    -------
    The unlearned model (a new object unless ``inplace=True``). Its ``unlearning_records_`` gains
    one entry (method, guarantee, parameters, counts, keyed digests of the request when ``key`` is
    given, timings, versions). The forgotten cells are no longer among its ``train_indices``; they
    join its ``test_indices`` (cells not trained on), so the saved index sets do not single them out
    as the positions in no set. It carries no rewind checkpoint (``rewind_checkpoint_`` is ``None``:
    the input model's saw the forgotten cells), except after ``retrain`` of a scforget model, whose
    fresh run records its own.

    Examples
    --------
    >>> new = scforget.unlearn(model, split.forget, method="finetune", seed=0)
    >>> new.unlearning_records_[-1]["method"]
    'finetune'
    """
    # ---- validation, before any work ----
    check_model(model, supported=UNLEARN_CLASSES, task="unlearning", designs=("sharded",))
    inplace = check_bool(inplace, "inplace")
    spec = get_method(method)
    _check_design(model, spec)
    params, trainer_kwargs = _route_kwargs(spec, plan_kwargs, kwargs)
    if any(isinstance(c, RewindCheckpoint) for c in trainer_kwargs.get("callbacks") or []):
        raise TypeError(
            "Drop the RewindCheckpoint from `callbacks`: a checkpoint recorded while unlearning starts from weights "
            "that saw the forgotten cells. A retrain records a fresh one by itself."
        )
    spec.check_params(params)
    batch_size = check_int(batch_size, "batch_size", minimum=1, allow_none=True)
    max_epochs = check_int(max_epochs, "max_epochs", minimum=0, allow_none=True)
    seed = resolve_seed(seed)
    if key is not None:
        _key_bytes(key)

    names = model.adata.obs_names
    forget_pos = as_positions(forget, names, argument="forget")
    requested = names[forget_pos]
    train = training_positions(model)
    never = np.setdiff1d(forget_pos, train)
    if never.size:
        warn(
            f"{never.size} of the {forget_pos.size} forget cells were never training cells of this model; "
            "they are excluded (there is nothing to forget for them)."
        )
        forget_pos = np.intersect1d(forget_pos, train)
        if forget_pos.size == 0:
            raise ValueError("None of the `forget` cells were training cells of the model; nothing to unlearn.")
    retain_pos = _retain_positions(retain, train, forget_pos, names)
    validation = np.setdiff1d(validation_positions(model), forget_pos)

    recipe = training_recipe(model)
    if max_epochs is None:
        if recipe["max_epochs"] is None:
            raise ValueError("Cannot infer the model's training epochs (no history); pass `max_epochs` explicitly.")
        max_epochs = int(spec.default_epochs(int(recipe["max_epochs"])))
    if not spec.accepts_epochs and max_epochs > 0:
        raise ValueError(
            f"{spec.name!r} edits parameters without training, so `max_epochs` must be 0 (got {max_epochs}). "
            "For a retain fine-tune afterwards, run unlearn(result, forget, method='finetune')."
        )
    if spec.kind == "training" and max_epochs < 1:
        raise ValueError(f"`max_epochs` must be at least 1 for training-based methods; got {max_epochs}.")
    batch_size = int(recipe.get("batch_size") or 128) if batch_size is None else batch_size
    module = getattr(model, "module", None)
    if max_epochs > 0 and module is not None and has_batchnorm(module) and (batch_size < 2 or retain_pos.size < 2):
        raise ValueError(
            f"Training with BatchNorm needs at least two cells per minibatch, but `batch_size`={batch_size} and "
            f"{retain_pos.size} retain cell(s). Use a `batch_size` of at least 2 and keep at least two retain cells."
        )
    _check_scheduler(spec, params, validation)
    if spec.name == "dpsgd" or (spec.name == "retrain" and getattr(model, PRIVACY_ATTR, None)):
        check_private_strategy(trainer_kwargs)  # DP-SGD (a private model retrains privately)
    if spec.check is not None:
        spec.check(model, params, forget_pos)
    check_counts(model)

    # ---- work ----
    original = {a: getattr(model, a, None) for a in ("train_indices", "validation_indices", "test_indices")}
    ctx = UnlearnContext(
        forget=forget_pos,
        retain=retain_pos,
        validation=validation,
        max_epochs=int(max_epochs),
        batch_size=int(batch_size),
        params=params,
        seed=seed,
        accelerator=accelerator,
        devices=devices,
        trainer_kwargs=trainer_kwargs,
        recipe=recipe,
    )
    start = time.perf_counter()
    with seeded(seed), quiet_training():
        target = model if inplace else clone_model(model)
        spec.run(target, ctx)
    wall = time.perf_counter() - start
    # a rewind checkpoint saw the forgotten cells (the input's, or one recorded during this run): never
    # hand it on. Only an exact method's fresh run (retrain) may leave its own, made without them.
    if spec.kind != "exact" and hasattr(target, CHECKPOINT_ATTR):
        setattr(target, CHECKPOINT_ATTR, None)

    target.train_indices = np.setdiff1d(train, forget_pos)
    target.validation_indices = original["validation_indices"]
    # the forgotten cells join the cells never trained on, so the saved index sets do not single them out
    old_test = np.asarray([] if original["test_indices"] is None else original["test_indices"], dtype=np.int64)
    target.test_indices = np.union1d(old_test, forget_pos)
    if old_test.size == 0:
        warn(
            "The model has no test cells, so after this deletion its test set is exactly the forgotten cells: "
            "anyone holding the saved model and the AnnData can see which positions were deleted. Train with a "
            "test split (train_size + validation_size < 1) so that deleted cells hide among held-out ones."
        )
    if hasattr(target, "module"):
        target.module.eval()
    record_cell_order(target)
    record = make_record(
        method=spec.name,
        kind=spec.kind,
        guarantee=spec.guarantee,
        params={**default_params(spec), **params},
        request=request_fields(requested, names[forget_pos], key),
        n_retain=int(retain_pos.size),
        max_epochs=ctx.max_epochs,
        batch_size=ctx.batch_size,
        seed=ctx.seed,
        wall_time_s=wall,
        versions=package_versions(),
        info=ctx.info,
    )
    setattr(target, RECORDS_ATTR, [*list(getattr(target, RECORDS_ATTR, None) or []), record])
    return target
