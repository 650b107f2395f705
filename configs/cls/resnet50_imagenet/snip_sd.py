# SNIP (task loss) at initialisation, then DLB training.
_base_ = ['../epsd_resnet50_imagenet.py']
default_hooks = dict(pruning=dict(criterion='snip', loss='task'))
