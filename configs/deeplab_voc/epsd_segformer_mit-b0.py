# EPSD on SegFormer MiT-B0 (VOC12aug): prune the transformer backbone to 90%
# -- every weight matrix, the attention's Q/K/V projections (the bare
# in_proj_weight of nn.MultiheadAttention) included -- by the ProsPr
# meta-gradient of CE + DLB, then train with DLB.
_base_ = [
    '../_base_/models/segformer_mit-b0_sd.py',
    'mmseg::_base_/datasets/pascal_voc12_aug.py'
]
default_hooks = dict(
    pruning=dict(type='epsd_mm.EarlyPruningHook', sparsity=0.9))
