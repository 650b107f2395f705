# EPSD + CS-KD CAM localisation on the CUB-layout demo data, CPU size.
# Write the data first: python tools/make_demo_data.py cub --out data/cub_demo
# (4 classes x 40 images of 96 px: 120 train, 40 test; 5 training images per
# class are held out to choose the CAM threshold, so 100 train on)
# Same method as configs/epsd_cam_cub.py; only the sizes, the data and the
# schedule change: a thin ResNet-18 (base width 16, output stride 8, random
# init), 96x96 inputs, 20 epochs of 13 iterations.
_base_ = ['../epsd_cam_cub.py']

data_root = 'data/cub_demo/'
meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
             'flip', 'flip_direction', 'gt_label', 'split')
max_epochs = 20

model = dict(
    # Random init: keep the residual branches' last BN non-zero, or their
    # convs score zero under gradient criteria at initialisation.
    backbone=dict(
        depth=18,
        base_channels=16,
        strides=(1, 2, 1, 1),
        init_cfg=None,
        zero_init_residual=False),
    head=dict(num_classes=4, in_channels=128))

train_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=(108, 108), keep_ratio=False),
    dict(type='mmdet.RandomCrop', crop_size=(96, 96)),
    dict(type='mmdet.RandomFlip', prob=0.5),
    dict(type='mmdet.PackDetInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=(96, 96), keep_ratio=False),
    dict(type='mmdet.LoadAnnotations', with_bbox=True),
    dict(type='mmdet.PackDetInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=16,  # 8 anchors + 8 partners
    num_workers=1,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    optimizer=dict(lr=0.05, weight_decay=5e-4),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, T_max=max_epochs,
         eta_min=1e-4)
]
default_hooks = dict(
    logger=dict(interval=15),
    checkpoint=dict(interval=max_epochs, save_best=None),
    pruning=dict(num_batches=4))
# torch_num_threads: CPU reductions split by thread count, so the seeded
# result depends on it; fixed like the seed (see epsd_mm/utils/launch.py)
env_cfg = dict(
    dist_cfg=dict(backend='gloo'),
    torch_num_threads=2)
randomness = dict(seed=0)
