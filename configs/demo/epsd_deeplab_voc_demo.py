# EPSD on the built-in demo data (tools/make_demo_data.py voc), CPU size:
# DeepLabV3 with a thin ResNetV1c-18, 96x96 crops, 300 iterations.
# Same method as configs/epsd_deeplab_voc.py (the same model base and
# EarlyPruningHook); only sizes and data change.
_base_ = [
    '../_base_/models/deeplabv3_r50-d8_sd.py',
    '../_base_/datasets/voc_demo.py'
]
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs CUDA
max_iters = 300

model = dict(
    pretrained=None,
    data_preprocessor=dict(size={{_base_.crop_size}}),
    # Random init: mmseg zero-initialises the last BN of every residual
    # block, which would give every residual conv a zero SNIP/GraSP score.
    backbone=dict(
        depth=18,
        stem_channels=16,
        base_channels=16,
        norm_cfg=norm_cfg,
        zero_init_residual=False),
    decode_head=dict(
        in_channels=128,
        channels=32,
        dilations=(1, 6, 12, 18),
        norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=16, norm_cfg=norm_cfg))

optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters),
    pruning=dict(
        type='epsd_mm.EarlyPruningHook', sparsity=0.9, num_batches=4))
# torch_num_threads: CPU reductions split by thread count, so the seeded
# result depends on it; fixed like the seed (see epsd_mm/utils/launch.py)
env_cfg = dict(
    cudnn_benchmark=False, dist_cfg=dict(backend='gloo'),
    torch_num_threads=2)
randomness = dict(seed=0)
