# Structured EPSD on the CUB-layout demo data, CPU size:
# configs/cam_cub/epsd_channel.py on the demo CAM (epsd_cam_cub_demo.py): 50%
# of the backbone's channels removed before training.
_base_ = ['./epsd_cam_cub_demo.py']
default_hooks = dict(
    pruning=dict(granularity='channel', sparsity=0.5, min_density=0.05))
