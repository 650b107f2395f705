# Structured simple combination: channels scored by ProsPr on the plain task
# loss, then CS-KD training.
_base_ = ['./epsd_channel.py']
default_hooks = dict(pruning=dict(loss='task'))
