# EPSD on ImageNet with ResNet-50: prune the randomly initialised network
# before training by the ProsPr meta-gradient (3 SGD steps) of CE + DLB, then
# train with DLB. 90% sparsity, the level of the toolkit's VOC and CUB
# configs (the issue names no level for this experiment). Schedule and
# data: mmpretrain's resnet50_8xb32_in1k.py. The baseline family is in
# ./resnet50_imagenet/. Change the sparsity with
# default_hooks.pruning.sparsity (one key).
_base_ = ['./_base_/resnet50_imagenet_sd.py']
default_hooks = dict(
    pruning=dict(type='epsd_mm.EarlyPruningHook', sparsity=0.9))
