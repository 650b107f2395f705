# SNIP (task loss) at initialisation, then DLB training.
_base_ = ['../epsd_resnet18_cifar10.py']
default_hooks = dict(pruning=dict(criterion='snip', loss='task'))
