"""``scforget audit MODEL DATA``: audit a saved model from the command line, with flags for every choice."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

#: Attacks the command runs unless ``--attacks`` says otherwise: the ones that train nothing.
DEFAULT_ATTACKS = ("loss", "kl", "classifier", "distance")

#: Python arguments named in the library's messages -> the flags that set them here.
_FLAGS = {
    "members": "--members-key/--members-value",
    "nonmembers": "--nonmembers-key/--nonmembers-value or --nonmembers-data",
    "adata": "DATA",
    "model": "MODEL",
    "attacks": "--attacks",
    "n_folds": "--n-folds",
    "n_reference": "--n-reference",
    "reference_epochs": "--reference-epochs",
    "reference_models": "--n-reference",
    "groupby": "--groupby",
    "label_key": "--label-key",
    "donor_key": "--donor-key",
    "n_bootstrap": "--n-bootstrap",
    "seed": "--seed",
    "k": "--k",
    "matched": "--matched",
    "fleet": "--fleet",
    "accelerator": "--accelerator",
}


class CLIError(Exception):
    """An error the command reports in one line, naming the flag to change."""


def as_flags(message: str) -> str:
    """Rewrite the library's Python argument names in ``message`` as this command's flags."""
    message = message.replace("design_checks=False", "--no-design-checks")
    message = message.replace("matched=True", "--matched")
    message = re.sub(r"`nonmembers=None`|nonmembers=None", "no non-member flags", message)

    def flag(m: re.Match) -> str:
        name = m.group(1)
        return f"`{_FLAGS[name]}`" if name in _FLAGS else m.group(0)

    # `name`, `name=` and `name`=value forms
    message = re.sub(r"`([a-z_]+)(?:=[^`]*)?`", flag, message)
    return re.sub(r"\b(" + "|".join(k for k in _FLAGS if "_" in k) + r")=", lambda m: f"{_FLAGS[m.group(1)]} ", message)


def add_parser(sub: Any) -> None:
    """Add the ``audit`` subcommand to ``sub`` (the subparsers of ``scforget``)."""
    from scforget.privacy import ATTACKS

    a = sub.add_parser(
        "audit",
        help="audit a saved model for membership leakage",
        description="Membership-inference audit of a saved scvi-tools model. Members are cells the model trained "
        "on; non-members are cells it never saw: its own held-out cells, cells marked by --nonmembers-key/"
        "--nonmembers-value, or the cells of --nonmembers-data.",
    )
    a.add_argument("model", metavar="MODEL", help="directory of a saved scvi-tools model")
    a.add_argument("adata", metavar="DATA", help="the .h5ad the model was trained on (raw counts)")
    a.add_argument(
        "--members-key", help="obs column that marks the members (default: all of the model's training cells)"
    )
    a.add_argument("--members-value", help="value of --members-key that marks members")
    a.add_argument("--nonmembers-key", help="obs column that marks the non-members")
    a.add_argument("--nonmembers-value", help="value of --nonmembers-key that marks non-members")
    a.add_argument(
        "--nonmembers-data", metavar="OTHER", help="an .h5ad of cells the model never saw, used as non-members"
    )
    a.add_argument(
        "--attacks",
        nargs="+",
        choices=ATTACKS,
        default=list(DEFAULT_ATTACKS),
        help="attacks to run (default: %(default)s)",
    )
    a.add_argument("--n-reference", type=int, default=4, help="reference models lira/rmia train (default: 4)")
    a.add_argument("--reference-epochs", type=int, help="epochs per reference model (default: the model's own)")
    a.add_argument("--matched", action="store_true", help="non-members matched to each member's latent neighbourhood")
    a.add_argument("--groupby", nargs="+", help="obs column(s) for per-group results")
    a.add_argument("--label-key", help="obs column of cell types: composition check and RMIA populations")
    a.add_argument("--donor-key", help="obs column of donors: donor-level risk")
    a.add_argument("--n-folds", type=int, default=5, help="classifier cross-fitting folds (default: 5)")
    a.add_argument("--k", type=int, default=10, help="neighbours for matching and the distance attack (default: 10)")
    a.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples of the CIs (default: 1000)")
    a.add_argument("--seed", type=int, default=0, help="seed of folds, bootstrap and references (default: 0)")
    a.add_argument("--no-design-checks", action="store_true", help="skip the membership checks (null audits only)")
    a.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    a.add_argument("--accelerator", default="auto", help="Lightning accelerator of the reference models (cpu, gpu)")
    a.add_argument(
        "--fleet",
        metavar="SPEC",
        help="train lira/rmia reference models in parallel on Dask: local:N worker processes, or a scheduler "
        "address (tcp://host:8786); needs scforget[fleet]",
    )
    a.add_argument(
        "--trusted", action="store_true", help="load MODEL with scvi-tools' full unpickler (trusted files only)"
    )
    a.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report")
    a.add_argument("--out", default="audit_summary.csv", help="CSV file for the summary (default: %(default)s)")
    a.add_argument("--quiet", action="store_true", help="no progress output")
    a.set_defaults(func=run)


def _stage(start: float, text: str, quiet: bool) -> None:
    if not quiet:
        print(f"[{time.perf_counter() - start:6.1f} s] {text}", file=sys.stderr, flush=True)


def _read_h5ad(path: str, flag: str):
    import anndata as ad

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{flag} {path!r}: no such file.")
    try:
        return ad.read_h5ad(p)
    except Exception as e:  # noqa: BLE001 - h5py and anndata raise many types for a file that is not an h5ad
        raise CLIError(f"{flag} {path!r} is not a readable .h5ad file ({type(e).__name__}: {e}).") from None


def _load(args: argparse.Namespace, adata):
    from scforget.model import UnsafeModelFileError, load_model

    p = _model_dir(args.model)
    try:
        return load_model(p, adata, trusted=args.trusted, accelerator="cpu")
    except UnsafeModelFileError as e:
        raise CLIError(f"MODEL {args.model!r} was refused: {e} Pass --trusted only if you trust who made it.") from None
    except Exception as e:  # noqa: BLE001 - torch, zip and scvi-tools errors of a damaged or mismatched file
        raise CLIError(
            f"MODEL {args.model!r} could not be loaded on DATA ({type(e).__name__}: {as_flags(str(e))})."
        ) from None


def _model_dir(path: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise CLIError(f"MODEL {path!r}: no such directory (pass the directory a model was saved into).")
    if not any(p.glob("*model.pt")) and not (p / "sharded.json").exists():
        raise CLIError(f"MODEL {path!r} holds no model.pt; it is not a saved scvi-tools model.")
    return p


def _mask(adata, key: str | None, value: str | None, what: str):
    from scforget._core import close_matches

    if key is None and value is None:
        return None
    if key is None or value is None:
        raise CLIError(f"--{what}-key and --{what}-value go together; pass both.")
    if key not in adata.obs.columns:
        raise CLIError(f"--{what}-key {key!r} is not an obs column of DATA.{close_matches(key, adata.obs.columns)}")
    col = adata.obs[key].astype(str)
    mask = (col == value).to_numpy()
    if not mask.any():
        values = ", ".join(map(str, col.unique()[:8]))
        raise CLIError(f"--{what}-value {value!r} marks no cell of DATA (values of {key!r}: {values}).")
    return mask


def _columns(adata, args: argparse.Namespace) -> None:
    from scforget._core import close_matches

    for flag, keys in (
        ("--groupby", args.groupby or []),
        ("--label-key", [args.label_key] if args.label_key else []),
        ("--donor-key", [args.donor_key] if args.donor_key else []),
    ):
        for key in keys:
            if key not in adata.obs.columns:
                raise CLIError(
                    f"{flag} {key!r} is not an obs column of the audited cells.{close_matches(key, adata.obs.columns)}"
                )


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, low in (
        ("--n-reference", args.n_reference, 1),
        ("--reference-epochs", args.reference_epochs, 1),
        ("--n-folds", args.n_folds, 2),
        ("--k", args.k, 1),
        ("--n-bootstrap", args.n_bootstrap, 0),
        ("--threads", args.threads, 1),
    ):
        if value is not None and value < low:
            raise CLIError(f"{flag} must be at least {low}; got {value}.")
    if args.nonmembers_data and (args.nonmembers_key or args.nonmembers_value):
        raise CLIError("--nonmembers-data replaces --nonmembers-key/--nonmembers-value; pass one or the other.")


def run(args: argparse.Namespace) -> int:
    """Run ``scforget audit``; errors are printed as one line naming the flag (exit status 2)."""
    try:
        return _run(args)
    except CLIError as e:
        print(f"scforget audit: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"scforget audit: error: {as_flags(str(text))}", file=sys.stderr)
        return 2


def _audit(model: Any, audited: Any, member_names: Any, nonmembers: Any, args: argparse.Namespace, fleet: Any):
    """The library call behind the command."""
    import scforget as sf

    return sf.privacy.audit(
        model,
        audited,
        members=member_names,
        nonmembers=nonmembers,
        matched=args.matched,
        k=args.k,
        attacks=tuple(args.attacks),
        n_reference=args.n_reference,
        reference_epochs=args.reference_epochs,
        accelerator=args.accelerator,
        fleet=fleet,
        n_folds=args.n_folds,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        groupby=args.groupby,
        label_key=args.label_key,
        donor_key=args.donor_key,
        design_checks=not args.no_design_checks,
        progress_bar=not args.quiet,
    )


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    quiet = args.quiet
    _check_numbers(args)
    _model_dir(args.model)
    import logging

    import anndata as ad
    import numpy as np
    import scvi
    import torch

    from scforget._core import fleet_client, training_positions

    scvi.settings.verbosity = logging.WARNING  # scvi-tools' INFO lines would interleave with the report

    if args.threads:
        torch.set_num_threads(args.threads)
    _stage(start, f"reading {args.adata}", quiet)
    adata = _read_h5ad(args.adata, "DATA")
    other = _read_h5ad(args.nonmembers_data, "--nonmembers-data") if args.nonmembers_data else None
    _stage(
        start, f"loading {args.model} (weights only, checked)" if not args.trusted else f"loading {args.model}", quiet
    )
    model = _load(args, adata)
    members = _mask(adata, args.members_key, args.members_value, "members")
    if members is None:
        members = np.zeros(adata.n_obs, dtype=bool)
        members[training_positions(model)] = True
    member_names = adata.obs_names[members]
    nonmembers: Any = _mask(adata, args.nonmembers_key, args.nonmembers_value, "nonmembers")
    audited = None
    if other is not None:
        clash = other.obs_names.intersection(adata.obs_names)
        if clash.size:
            raise CLIError(
                f"--nonmembers-data shares {clash.size} cell names with DATA (e.g. {clash[0]!r}); "
                "non-members must be other cells."
            )
        genes = model.adata.var_names
        missing = genes.difference(other.var_names)
        if missing.size:
            raise CLIError(f"--nonmembers-data lacks {missing.size} of the model's genes (e.g. {missing[0]!r}).")
        audited = ad.concat([adata[:, genes], other[:, genes]], join="outer", merge="same")
        nonmembers = other.obs_names
    elif nonmembers is not None:
        nonmembers = adata.obs_names[nonmembers]
    _columns(audited if audited is not None else adata, args)
    _stage(start, f"auditing {member_names.size} members with {', '.join(args.attacks)}", quiet)
    with fleet_client(args.fleet) as fleet:
        report = _audit(model, audited, member_names, nonmembers, args, fleet)
    _stage(start, "done", quiet)
    print(report.verdict())
    print()
    print(report.summary().to_string(float_format=lambda x: f"{x:.3f}"))
    for note in report.notes():
        print(f"note: {as_flags(note)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.summary(full=True).to_csv(out)
    written = [str(out)]
    if args.html:
        written.append(str(report.to_html(args.html)))
    print(f"wrote {', '.join(written)} ({time.perf_counter() - start:.1f} s)")
    return 0
