# Random pruning at initialisation, then DLB training.
_base_ = ['../epsd_resnet50_imagenet.py']
default_hooks = dict(pruning=dict(criterion='random'))
