# CAM localiser: ImageNet-pretrained ResNet-50 whose last stage keeps stride 1
# (output stride 16, 14x14 CAMs at 224x224), a 1x1-conv CAM head, and boxes
# from the CAM thresholded at 0.2 of its range.
model = dict(
    type='epsd_mm.CAMLocalizer',
    data_preprocessor=dict(
        type='mmdet.DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='mmdet.ResNet',
        depth=50,
        num_stages=4,
        strides=(1, 2, 2, 1),
        out_indices=(3, ),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    head=dict(
        type='epsd_mm.CAMHead',
        num_classes=200,
        in_channels=2048,
        loss_cls=dict(type='mmdet.CrossEntropyLoss', loss_weight=1.0)),
    # 'gt': the box and the CAM of the ground-truth class, the WSOL protocol
    # for GT-known Loc and MaxBoxAccV2 (Top-1 Loc is unaffected). Use 'pred'
    # for images without labels.
    test_cfg=dict(cam_threshold=0.2, cam_class='gt'))
