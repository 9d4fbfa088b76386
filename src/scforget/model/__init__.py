"""scvi-tools models that can forget: drop-in subclasses with :class:`UnlearningMixin`."""

from scforget._core import UnsafeModelFileError

from ._adapters import AdapterSCVI
from ._condscvi import CondSCVI
from ._load import load_model
from ._mixin import UnlearningMixin
from ._scvi import SCVI
from ._sharded import ShardedSCVI

__all__ = ["AdapterSCVI", "CondSCVI", "SCVI", "ShardedSCVI", "UnlearningMixin", "UnsafeModelFileError", "load_model"]
