"""epsd_mm: Early Pruning with Self-Distillation for OpenMMLab.

Importing the package is cheap and needs neither mmseg nor mmdet: the
pruning core (:mod:`epsd_mm.pruning`) is plain PyTorch, and the MMEngine
components (hooks, models, losses, datasets, metrics) register themselves
the first time a config looks one up in the ``epsd_mm`` registry scope (see
:mod:`epsd_mm.registry`). :func:`epsd_mm.utils.register_all_modules` imports
them all at once.

The import also tells MMEngine that configs may inherit ours as
``epsd_mm::epsd_deeplab_voc.py``, the way they inherit ``mmseg::`` ones.
"""
from .version import __version__


def _register_config_package() -> None:
    """Add epsd_mm to the packages MMEngine resolves ``pkg::`` configs of."""
    try:
        from mmengine.config.utils import MODULE2PACKAGE
    except ImportError:  # the pruning core works without MMEngine
        return
    MODULE2PACKAGE.setdefault('epsd_mm', 'epsd_mm')


_register_config_package()

__all__ = ['__version__']
