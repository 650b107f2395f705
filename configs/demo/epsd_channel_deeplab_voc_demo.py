# Structured EPSD on the demo data, CPU size: configs/deeplab_voc/epsd_channel.py
# on the demo DeepLabV3 (configs/demo/epsd_deeplab_voc_demo.py): 50% of the
# backbone's channels removed before training.
_base_ = ['./epsd_deeplab_voc_demo.py']
default_hooks = dict(
    pruning=dict(granularity='channel', sparsity=0.5, min_density=0.05))
