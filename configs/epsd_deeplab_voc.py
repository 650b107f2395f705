# EPSD on Pascal VOC: prune the backbone to 90% sparsity before training by the
# ProsPr meta-gradient (3 SGD steps) of CE + DLB, then train with DLB.
# Change the sparsity with default_hooks.pruning.sparsity (one key).
_base_ = ['./_base_/deeplabv3_voc12aug_sd.py']
default_hooks = dict(
    pruning=dict(type='epsd_mm.EarlyPruningHook', sparsity=0.9))
