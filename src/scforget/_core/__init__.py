"""VAE primitives and checks shared by every room of scforget (private).

Nothing here imports another scforget room except :mod:`scforget._compat`: posterior-mean forward
pass, count likelihoods, module modes, argument validators, model checks, the seed policy, model
cloning and training recipes, minibatch helpers and quiet training.
"""

from ._checks import AUDIT_CLASSES, FISHER_CLASSES, UNLEARN_CLASSES, check_counts, check_model
from ._clone import clone_model, copy_bookkeeping, fresh_model, from_payload, init_kwargs, model_payload
from ._distributed import ddp_strategy, is_multiprocess, process_rank, spawns_children, with_ddp_strategy
from ._docs import doc_params
from ._fleet import FLEET_EXTRA, check_fleet, fleet_client, local_fleet, local_workers, run_jobs
from ._forward import (
    decode,
    inference,
    kl_to_prior,
    latent_point,
    negative_elbo,
    posterior,
    posterior_mean_forward,
    reconstruction_log_prob,
)
from ._indices import (
    CELL_ORDER_ATTR,
    cell_order_digest,
    never_trained,
    record_cell_order,
    training_positions,
    validation_positions,
)
from ._likelihood import log_prob, nb_log_prob
from ._modes import BATCHNORM, drop_last_for_batchnorm, eval_mode, frozen_batchnorm, has_batchnorm
from ._quiet import quiet_setup, quiet_training
from ._recipe import (
    DEFAULT_BATCH_SIZE,
    RECIPE_ATTR,
    default_max_epochs,
    estimate_retrain_seconds,
    recipe_train_kwargs,
    record_training_call,
    training_recipe,
)
from ._safe_load import UnsafeModelFileError, checked_model_dir, read_model_file
from ._seed import fork_rng, resolve_seed, rng_devices, seeded
from ._split import split_cells
from ._tensors import minibatches, n_cells, slice_tensors, tensors_to
from ._validate import accepted_keywords, check_bool, check_choice, check_int, check_number, close_matches
from ._versions import package_versions
from ._warn import warn

__all__ = [
    "AUDIT_CLASSES",
    "BATCHNORM",
    "CELL_ORDER_ATTR",
    "DEFAULT_BATCH_SIZE",
    "FISHER_CLASSES",
    "FLEET_EXTRA",
    "RECIPE_ATTR",
    "UNLEARN_CLASSES",
    "accepted_keywords",
    "cell_order_digest",
    "check_bool",
    "check_choice",
    "check_fleet",
    "check_counts",
    "check_int",
    "check_model",
    "check_number",
    "clone_model",
    "close_matches",
    "copy_bookkeeping",
    "ddp_strategy",
    "decode",
    "default_max_epochs",
    "doc_params",
    "drop_last_for_batchnorm",
    "estimate_retrain_seconds",
    "eval_mode",
    "fork_rng",
    "fleet_client",
    "fresh_model",
    "from_payload",
    "frozen_batchnorm",
    "has_batchnorm",
    "inference",
    "is_multiprocess",
    "process_rank",
    "spawns_children",
    "init_kwargs",
    "kl_to_prior",
    "latent_point",
    "local_fleet",
    "local_workers",
    "log_prob",
    "minibatches",
    "model_payload",
    "n_cells",
    "nb_log_prob",
    "negative_elbo",
    "never_trained",
    "package_versions",
    "posterior",
    "posterior_mean_forward",
    "quiet_setup",
    "quiet_training",
    "recipe_train_kwargs",
    "reconstruction_log_prob",
    "record_cell_order",
    "record_training_call",
    "resolve_seed",
    "rng_devices",
    "run_jobs",
    "seeded",
    "split_cells",
    "UnsafeModelFileError",
    "checked_model_dir",
    "read_model_file",
    "slice_tensors",
    "tensors_to",
    "training_positions",
    "training_recipe",
    "validation_positions",
    "warn",
    "with_ddp_strategy",
]
