# Dense MobileNet-v2 on Tiny-ImageNet trained with DLB.
_base_ = ['../_base_/mobilenetv2_tinyimagenet_sd.py']
