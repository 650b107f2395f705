# L1-norm channel pruning (the filter-pruning baseline), then DLB training:
# channels scored by the L1 norm of their filters, ranked globally relative
# to their group's mean (filter norms grow with fan-in); for the layer-wise
# variant of Li et al. set default_hooks.pruning.selection='layerwise'.
_base_ = ['./epsd_channel.py']
default_hooks = dict(pruning=dict(criterion='magnitude'))
