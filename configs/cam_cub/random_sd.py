# Random pruning at initialisation, then CS-KD training.
_base_ = ['../epsd_cam_cub.py']
default_hooks = dict(pruning=dict(criterion='random'))
