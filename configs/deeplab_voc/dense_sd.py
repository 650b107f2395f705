# Dense DeepLabV3 trained with DLB.
_base_ = ['../_base_/deeplabv3_voc12aug_sd.py']
