# Random pruning at initialisation, then DLB training.
_base_ = ['../epsd_vgg19_cifar100.py']
default_hooks = dict(pruning=dict(criterion='random'))
