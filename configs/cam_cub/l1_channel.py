# L1-norm channel pruning (the filter-pruning baseline), then CS-KD training;
# global ranking relative to each group's mean filter norm.
_base_ = ['./epsd_channel.py']
default_hooks = dict(pruning=dict(criterion='magnitude'))
