# Simple combination: ProsPr scored with the plain task loss, then DLB.
_base_ = ['../epsd_vgg19_cifar100.py']
default_hooks = dict(pruning=dict(loss='task'))
