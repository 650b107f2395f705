# Simple combination: ProsPr scored with the plain task loss, then CS-KD.
_base_ = ['../epsd_cam_cub.py']
default_hooks = dict(pruning=dict(loss='task'))
