# Tiny-ImageNet (200 classes, 64x64 images, 100k train / 10k val) read by
# mmpretrain's CustomDataset (mmpretrain has no Tiny-ImageNet class):
# classes are sub-folders, sorted by name (the WordNet ids), and images are
# found recursively, so the official train folder is read as it unpacks:
#
#   data/tiny-imagenet-200/train/<wnid>/images/<wnid>_<k>.JPEG
#
# The official val folder is flat (val/images/ + val/val_annotations.txt);
# sort it into class folders once, as links (val_by_class/<wnid>/*.JPEG):
#
#   cd data/tiny-imagenet-200 && while IFS=$'\t' read -r f w _; do
#     mkdir -p val_by_class/$w && ln -s ../../val/images/$f val_by_class/$w/;
#   done < val/val_annotations.txt
#
# Augmentation: random crop with 4 px padding and horizontal flip, the CIFAR
# recipe at 64 px; ImageNet's mean and std.
dataset_type = 'mmpretrain.CustomDataset'
data_root = 'data/tiny-imagenet-200/'
data_preprocessor = dict(
    num_classes=200,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)  # images load as BGR

train_pipeline = [
    dict(type='mmpretrain.LoadImageFromFile'),
    dict(type='mmpretrain.RandomCrop', crop_size=64, padding=4),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.PackInputs'),
]
test_pipeline = [
    dict(type='mmpretrain.LoadImageFromFile'),
    dict(type='mmpretrain.PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='val_by_class',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
