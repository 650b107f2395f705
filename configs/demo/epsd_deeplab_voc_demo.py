# EPSD on the built-in demo data (tools/make_demo_data.py voc), CPU size:
# DeepLabV3 with a thin ResNetV1c-18, 96x96 crops, 300 iterations.
# Same method as configs/epsd_deeplab_voc.py; only sizes and data change.
_base_ = ['../epsd_deeplab_voc.py']

data_root = 'data/voc_demo/VOCdevkit/VOC2012'
crop_size = (96, 96)
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs CUDA
max_iters = 300

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
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

# Transforms are built in mmseg's scope (as those inherited from mmseg::
# configs are), so mmseg.apis.inference_model and MMSegInferencer, which
# find transforms by their bare names, build this pipeline too.
train_pipeline = [
    dict(type='LoadImageFromFile', _scope_='mmseg'),
    dict(type='LoadAnnotations', _scope_='mmseg'),
    dict(
        type='RandomResize',
        scale=(128, 128),
        ratio_range=(0.75, 1.5),
        keep_ratio=True,
        _scope_='mmseg'),
    dict(
        type='RandomCrop',
        crop_size=crop_size,
        cat_max_ratio=0.75,
        _scope_='mmseg'),
    dict(type='RandomFlip', prob=0.5, _scope_='mmseg'),
    dict(type='PhotoMetricDistortion', _scope_='mmseg'),
    dict(type='Pad', size=crop_size, _scope_='mmseg'),
    dict(type='PackSegInputs', _scope_='mmseg')
]
test_pipeline = [
    dict(type='LoadImageFromFile', _scope_='mmseg'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True, _scope_='mmseg'),
    dict(type='LoadAnnotations', _scope_='mmseg'),
    dict(type='PackSegInputs', _scope_='mmseg')
]
voc_train = dict(
    type='mmseg.PascalVOCDataset',
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
voc_aug = dict(
    type='mmseg.PascalVOCDataset',
    data_root=data_root,
    data_prefix=dict(
        img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(datasets=[voc_train, voc_aug]))
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters),
    pruning=dict(num_batches=4))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
