# CUB-200-2011 for weakly supervised object localisation, official layout at
# data/CUB_200_2011. Training sees image-level labels only (gt_label); the
# test pipeline loads the boxes *after* Resize, so they stay in original
# image coordinates as WSOLMetric expects. 224x224 inputs: Resize(256) +
# RandomCrop(224) + flip for training, Resize(224) for testing.
#
# CAM threshold protocol (Choe et al., CVPR 2020): 5 training images per
# class (1,000) are held out of training, with their boxes; val/test
# evaluate on them and on the test images in one pass, and WSOLMetric
# reports Top-1/GT-known Loc at the fixed threshold (@0.20) and at the
# threshold that is best on the held-out images (@best). Keep
# heldout_per_class the same in the train and val/test datasets
# (tools/train.py checks that training sees no held-out image).
dataset_type = 'epsd_mm.CUB200Dataset'
data_root = 'data/CUB_200_2011/'
heldout_per_class = 5
backend_args = None
# 'split' tells WSOLMetric held-out ('heldout') from test images
meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
             'flip', 'flip_direction', 'gt_label', 'split')

train_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.Resize', scale=(256, 256), keep_ratio=False),
    dict(type='mmdet.RandomCrop', crop_size=(224, 224)),
    dict(type='mmdet.RandomFlip', prob=0.5),
    dict(type='mmdet.PackDetInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='mmdet.LoadImageFromFile', backend_args=backend_args),
    dict(type='mmdet.Resize', scale=(224, 224), keep_ratio=False),
    dict(type='mmdet.LoadAnnotations', with_bbox=True),
    dict(type='mmdet.PackDetInputs', meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        heldout_per_class=heldout_per_class,
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split=('test', 'heldout'),
        heldout_per_class=heldout_per_class,
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# WSOL benchmark protocol (Choe et al., CVPR 2020): CAM thresholds in 0.01
# steps, MaxBoxAccV2 at IoU 0.3/0.5/0.7. cam_threshold is the model's
# test_cfg.cam_threshold (the metric checks that its boxes match; change it
# with val_evaluator.0.cam_threshold). Next to it, the calibration of the
# model's class predictions (ECE, AURC, E-AURC of the top-1 softmax score).
val_evaluator = [
    dict(
        type='epsd_mm.WSOLMetric', cam_threshold=0.2,
        cam_curve_interval=0.01),
    dict(type='epsd_mm.CalibrationMetric')
]
test_evaluator = val_evaluator
