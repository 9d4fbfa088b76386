"""Load any saved scvi-tools or scforget model, without running code from the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scforget._core import check_bool, checked_model_dir, quiet_setup, read_model_file


def load_model(
    dir_path: str | Path,
    adata: Any = None,
    *,
    trusted: bool = False,
    accelerator: str = "auto",
    device: int | str = "auto",
    prefix: str | None = None,
) -> Any:
    """Load a saved model of any scvi-tools class (or scforget's), picking the class from the file.

    The model file is read with torch's weights-only unpickler and an allowlist of what scvi-tools
    and scforget save; a file holding anything else raises
    :class:`~scforget.model.UnsafeModelFileError` before any of it runs. Use this for models other
    people trained (the :command:`scforget audit` command does).

    Parameters
    ----------
    dir_path
        Directory of a model saved with ``model.save()`` (or a :class:`~scforget.model.ShardedSCVI`).
    adata
        The AnnData (or MuData) to load the model with; ``None`` reads the one saved with it.
    trusted
        Skip the check and use scvi-tools' full unpickler (only for files you trust).
    accelerator, device, prefix
        As in :meth:`scvi.model.base.BaseModelClass.load`.

    Returns
    -------
    The model: a scforget class where one exists (the drop-in ``SCVI``, ``CondSCVI``,
    ``AdapterSCVI``), else the scvi-tools class named in the file.
    """
    import scvi

    from scforget import model as sf_model

    trusted = check_bool(trusted, "trusted")
    path = Path(dir_path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; pass the directory a model was saved into.")
    if (path / "sharded.json").exists():
        if adata is None:
            raise ValueError("A ShardedSCVI is loaded with the AnnData it was trained on; pass `adata`.")
        return sf_model.ShardedSCVI.load(path, adata=adata, accelerator=accelerator, device=device, trusted=trusted)
    content = read_model_file(path / f"{prefix or ''}model.pt", trusted=trusted)
    try:
        name = content["attr_dict"]["registry_"]["model_name"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} does not hold a model saved by scvi-tools (no model name in the file).") from e
    cls = getattr(sf_model, str(name), None) or getattr(scvi.model, str(name), None)
    if cls is None:
        raise ValueError(f"The file names the model class {name!r}, which neither scforget nor scvi-tools provides.")
    with quiet_setup():
        if issubclass(cls, sf_model.UnlearningMixin):
            return cls.load(str(path), adata, accelerator=accelerator, device=device, prefix=prefix, trusted=trusted)
        with checked_model_dir(path, prefix=prefix, trusted=trusted) as checked:
            return cls.load(checked, adata, accelerator=accelerator, device=device, prefix=prefix)
