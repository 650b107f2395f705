# SNIP (task loss) at initialisation, then DLB training.
_base_ = ['../epsd_mobilenetv2_tinyimagenet.py']
default_hooks = dict(pruning=dict(criterion='snip', loss='task'))
