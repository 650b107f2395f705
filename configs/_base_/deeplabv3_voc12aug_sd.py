# DeepLabV3 (ResNet-50-D8) on Pascal VOC 2012 + aug, 512x512, 20k iterations,
# trained with self-distillation (DLB): mmseg's own
# deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py, with the segmentor swapped
# for the self-distilling one. No pruning here.
_base_ = [
    './models/deeplabv3_r50-d8_sd.py',
    'mmseg::_base_/datasets/pascal_voc12_aug.py'
]
