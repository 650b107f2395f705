"""Registries of the ``epsd_mm`` scope.

Every registry has MMEngine's registry of the same kind as parent, so configs
running with ``default_scope='epsd_mm'`` still find MMEngine components, and
``mmseg::``/``mmdet::`` inherited configs build their parts in their own scope
(MMEngine tags every dict inherited from a package with ``_scope_``).

Components register lazily: a registry imports its ``locations`` the first
time something is looked up in it, so ``import epsd_mm`` stays cheap and a
missing optional library (mmseg, mmdet, mmpretrain) only disables the
components that need it. :func:`import_task_module` records why a task module
could not be imported, and a failed look-up says so instead of a bare "not
in the registry".
"""
from importlib import import_module
from typing import Dict, Optional, Type

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import \
    RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import \
    WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry as MMEngineRegistry

#: Task module -> why it could not be imported (its optional library is
#: missing); filled by :func:`import_task_module`.
UNAVAILABLE_MODULES: Dict[str, ImportError] = {}


def import_task_module(module: str, requires: str) -> bool:
    """Import a module of components that need an optional library.

    Args:
        module (str): Absolute module name, e.g. ``'epsd_mm.models.cam'``.
        requires (str): The top-level package it needs, e.g. ``'mmdet'``.

    Returns:
        bool: Whether the module was imported. An ``ImportError`` of
        anything but ``requires`` itself is raised, not hidden.
    """
    try:
        import_module(module)
    except ImportError as error:
        if (error.name or '').split('.')[0] != requires:
            raise
        UNAVAILABLE_MODULES[module] = error
        return False
    return True


class Registry(MMEngineRegistry):
    """MMEngine's registry that explains a component it does not have.

    When a look-up fails and some task modules of epsd_mm could not be
    imported, the error names them and the missing library, instead of
    MMEngine's generic "not in the registry".
    """

    def get(self, key: str) -> Optional[Type]:
        obj = super().get(key)
        if obj is None and UNAVAILABLE_MODULES:
            reasons = '; '.join(f'{module} ({error})'
                                for module, error in UNAVAILABLE_MODULES.items())
            raise KeyError(
                f'{key!r} is not in the {self.scope}::{self.name} registry. '
                f'These epsd_mm modules could not be imported: {reasons}. '
                'Install the missing library if the component lives there.')
        return obj


RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS)
RUNNER_CONSTRUCTORS = Registry(
    'runner constructor', parent=MMENGINE_RUNNER_CONSTRUCTORS)
LOOPS = Registry('loop', parent=MMENGINE_LOOPS)
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, locations=['epsd_mm.engine'])
DATASETS = Registry(
    'dataset', parent=MMENGINE_DATASETS, locations=['epsd_mm.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler',
    parent=MMENGINE_DATA_SAMPLERS,
    locations=['epsd_mm.datasets'])
TRANSFORMS = Registry(
    'transform', parent=MMENGINE_TRANSFORMS, locations=['epsd_mm.datasets'])
MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    locations=['epsd_mm.models', 'epsd_mm.losses'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = Registry(
    'weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS)
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS)
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = Registry(
    'parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS)
METRICS = Registry(
    'metric', parent=MMENGINE_METRICS, locations=['epsd_mm.evaluation'])
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR)
VISUALIZERS = Registry(
    'visualizer',
    parent=MMENGINE_VISUALIZERS,
    locations=['epsd_mm.visualization'])
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS)
LOG_PROCESSORS = Registry('log_processor', parent=MMENGINE_LOG_PROCESSORS)

#: Self-distillation methods (DLB, PS-KD, CS-KD, cross-correlation): one
#: object per method owning its loss call, state and checkpoint entries.
SD_METHODS = Registry(
    'sd_method', scope='epsd_mm', locations=['epsd_mm.sd_methods'])

__all__ = [
    'DATASETS', 'DATA_SAMPLERS', 'EVALUATOR', 'HOOKS', 'LOG_PROCESSORS',
    'LOOPS', 'METRICS', 'MODELS', 'MODEL_WRAPPERS', 'OPTIMIZERS',
    'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS',
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'Registry', 'SD_METHODS', 'TRANSFORMS',
    'VISBACKENDS', 'VISUALIZERS', 'WEIGHT_INITIALIZERS', 'import_task_module'
]
