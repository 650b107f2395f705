"""epsd_mm: Early Pruning with Self-Distillation for OpenMMLab.

Importing the package is cheap and needs neither mmseg nor mmdet: the
pruning core (:mod:`epsd_mm.pruning`) is plain PyTorch, and the MMEngine
components (hooks, models, losses, datasets, metrics) register themselves
the first time a config looks one up in the ``epsd_mm`` registry scope (see
:mod:`epsd_mm.registry`). :func:`epsd_mm.utils.register_all_modules` imports
them all at once.

The import also tells MMEngine that configs may inherit ours as
``epsd_mm::epsd_deeplab_voc.py``, the way they inherit ``mmseg::`` ones, and
lets torch's ``weights_only`` loader read MMEngine training checkpoints (the
message hub's ``HistoryBuffer`` and numpy values; see
:mod:`epsd_mm.utils.checkpoint`), so ``import epsd_mm`` followed by
``mmseg.apis.init_model(config, 'work_dirs/.../iter_300.pth')`` works. The
import stays cheap: when torch is not imported yet, the allow-list is
registered the moment it is (a post-import hook), not by importing torch
here (which would make ``import epsd_mm`` five times slower).
"""
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Optional, Sequence

from .version import __version__


def _register_config_package() -> None:
    """Add epsd_mm to the packages MMEngine resolves ``pkg::`` configs of."""
    try:
        from mmengine.config.utils import MODULE2PACKAGE
    except ImportError:  # the pruning core works without MMEngine
        return
    MODULE2PACKAGE.setdefault('epsd_mm', 'epsd_mm')


def _register_checkpoint_safe_globals() -> None:
    """Allow-list the globals of MMEngine checkpoints in torch's loader."""
    try:
        from .utils.checkpoint import register_checkpoint_safe_globals
    except ImportError:  # the pruning core works without MMEngine
        return
    register_checkpoint_safe_globals()


class _AfterTorchImport(importlib.abc.MetaPathFinder):
    """Registers the checkpoint allow-list right after ``torch`` is
    imported, then removes itself (a post-import hook, PEP 369 style)."""

    def find_spec(self,
                  fullname: str,
                  path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None):
        if fullname != 'torch':
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # the other finders'
        if spec is None or spec.loader is None or not hasattr(
                spec.loader, 'exec_module'):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            _register_checkpoint_safe_globals()

        spec.loader.exec_module = exec_then_register
        return spec


def _register_checkpoint_safe_globals_with_torch() -> None:
    """Register the allow-list now if torch is imported, else once it is."""
    if 'torch' in sys.modules:
        _register_checkpoint_safe_globals()
    elif not any(isinstance(f, _AfterTorchImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTorchImport())


_register_config_package()
_register_checkpoint_safe_globals_with_torch()

__all__ = ['__version__']
