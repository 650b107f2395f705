from epsd_mm.registry import import_task_module
from .cat_ids import sample_cat_ids
from .demo_cub import write_cub_demo
from .demo_voc import write_voc_demo
from .samplers import ClassPairSampler

__all__ = [
    'ClassPairSampler', 'sample_cat_ids', 'write_cub_demo', 'write_voc_demo'
]

if import_task_module('epsd_mm.datasets.cub', requires='mmdet'):
    from .cub import CUB200Dataset
    __all__ += ['CUB200Dataset']
if import_task_module('epsd_mm.datasets.demo_cifar', requires='mmpretrain'):
    from .demo_cifar import DemoCIFAR10, write_cifar_demo
    __all__ += ['DemoCIFAR10', 'write_cifar_demo']
