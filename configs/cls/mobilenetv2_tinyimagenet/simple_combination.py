# Simple combination: ProsPr scored with the plain task loss, then DLB.
_base_ = ['../epsd_mobilenetv2_tinyimagenet.py']
default_hooks = dict(pruning=dict(loss='task'))
