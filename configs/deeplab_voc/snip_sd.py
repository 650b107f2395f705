# SNIP (task loss) at initialisation, then DLB training.
_base_ = ['../epsd_deeplab_voc.py']
default_hooks = dict(pruning=dict(criterion='snip', loss='task'))
