# EPSD on CIFAR-10 with ResNet-18, the EPSD paper's first experiment at its
# 59% sparsity: prune the randomly initialised network before training by the
# ProsPr meta-gradient (3 SGD steps) of CE + DLB, then train with DLB.
# Schedule and data: mmpretrain's resnet18_8xb16_cifar10.py (see
# ./_base_/resnet18_cifar10_sd.py). The baseline family is in
# ./resnet18_cifar10/. Change the sparsity with default_hooks.pruning.sparsity
# (one key).
_base_ = ['./_base_/resnet18_cifar10_sd.py']
default_hooks = dict(
    pruning=dict(type='epsd_mm.EarlyPruningHook', sparsity=0.59))
