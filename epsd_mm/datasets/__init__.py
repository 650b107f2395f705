from .cat_ids import sample_cat_ids
from .cub import CUB200Dataset
from .demo_cifar import DemoCIFAR10, write_cifar_demo
from .demo_cub import write_cub_demo
from .demo_voc import write_voc_demo
from .samplers import ClassPairSampler

__all__ = [
    'CUB200Dataset', 'ClassPairSampler', 'DemoCIFAR10', 'sample_cat_ids',
    'write_cifar_demo', 'write_cub_demo', 'write_voc_demo'
]
