# Structured EPSD on CUB: remove 50% of the ResNet-50 backbone's channels
# before training, scored by the ProsPr meta-gradient (3 SGD steps) of CE +
# CS-KD, then train the slim network with CS-KD. The CAM head only adapts its
# input channels; the checkpoints record the slim architecture. Channels are
# ranked globally; every channel group keeps at least 5% of its channels.
_base_ = ['../epsd_cam_cub.py']
default_hooks = dict(
    pruning=dict(granularity='channel', sparsity=0.5, min_density=0.05))
