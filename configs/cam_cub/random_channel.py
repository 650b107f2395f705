# Random channel pruning at initialisation, then CS-KD training.
_base_ = ['./epsd_channel.py']
default_hooks = dict(pruning=dict(criterion='random'))
