"""scvi-tools models that can forget: drop-in subclasses with :class:`UnlearningMixin`."""

from ._adapters import AdapterSCVI
from ._condscvi import CondSCVI
from ._mixin import UnlearningMixin
from ._scvi import SCVI
from ._sharded import ShardedSCVI

__all__ = ["AdapterSCVI", "CondSCVI", "SCVI", "ShardedSCVI", "UnlearningMixin"]
