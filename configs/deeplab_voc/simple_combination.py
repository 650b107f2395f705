# Simple combination: ProsPr scored with the plain task loss, then DLB training.
_base_ = ['../epsd_deeplab_voc.py']
default_hooks = dict(pruning=dict(loss='task'))
