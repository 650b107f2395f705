# EPSD on CUB-200-2011 weakly supervised object localisation: prune the
# ImageNet-initialised ResNet-50 backbone to 90% sparsity before training by
# the ProsPr meta-gradient (3 SGD steps) of CE + CS-KD, then train with CS-KD
# (T=4, lambda=3) on (anchor, partner) batches of the same class.
# Change the sparsity with default_hooks.pruning.sparsity (one key).
_base_ = ['./_base_/cam_r50_cub_sd.py']
default_hooks = dict(pruning=dict(type='epsd_mm.EarlyPruningHook'))
