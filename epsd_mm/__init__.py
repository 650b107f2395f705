"""epsd_mm: Early Pruning with Self-Distillation for OpenMMLab.

Importing the package registers every module in the ``epsd_mm`` registry
scope and allow-lists the objects MMEngine stores in checkpoints for torch's
``weights_only`` loader.
"""
from .utils import register_checkpoint_safe_globals

register_checkpoint_safe_globals()

from . import (datasets, engine, evaluation, losses, models,  # noqa: E402,F401
               visualization)

__version__ = '0.1.0'
