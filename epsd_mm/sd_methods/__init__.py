"""Self-distillation methods as plug-ins (registry ``SD_METHODS``).

Each method owns its loss call, its state, what it needs from the train
loader, its definition at pruning-time scoring and what it saves in
checkpoints (see :class:`BaseSDMethod`). Register a new one with
``@SD_METHODS.register_module()`` and select it in a config with
``model.sd=dict(type='MyMethod', ...)``; nothing else needs editing.
"""
from .base import BaseSDMethod
from .cross_correlation import CrossCorrelation
from .cskd import CSKD
from .dlb import DLB
from .pskd import PSKD

__all__ = ['BaseSDMethod', 'CSKD', 'CrossCorrelation', 'DLB', 'PSKD']
