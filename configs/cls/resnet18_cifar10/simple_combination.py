# Simple combination: ProsPr scored with the plain task loss, then DLB.
_base_ = ['../epsd_resnet18_cifar10.py']
default_hooks = dict(pruning=dict(loss='task'))
