# The built-in demo data in the Pascal VOC 2012 + aug layout
# (tools/make_demo_data.py voc), at CPU size: 96x96 crops of 128 px images.
# mmseg's VOC12aug dataset config with the demo's paths, sizes and loaders;
# the transforms are built in mmseg's scope (as those inherited from mmseg::
# configs are), so mmseg.apis.inference_model and MMSegInferencer, which
# find transforms by their bare names, build this pipeline too.
_base_ = ['mmseg::_base_/datasets/pascal_voc12_aug.py']
data_root = 'data/voc_demo/VOCdevkit/VOC2012'
crop_size = (96, 96)
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
