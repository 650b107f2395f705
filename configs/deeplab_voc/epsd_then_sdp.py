# EPSD followed by self-distilled pruning on DeepLabV3: prune to 50% at
# initialisation with EPSD (ProsPr on CE + the cross-correlation term, whose
# teacher at initialisation is the network as it is before the inner steps),
# then gradually on to 90% by magnitude over the first 10k iterations while
# the cross-correlation term pulls the network towards its self before the
# gradual cuts (the 50% network). No published system combines the two.
_base_ = ['./sdp_xcorr.py']
default_hooks = dict(
    epsd=dict(type='epsd_mm.EarlyPruningHook', sparsity=0.5),
    pruning=dict(initial_sparsity=0.5))
