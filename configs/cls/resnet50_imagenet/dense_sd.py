# Dense ResNet-50 on ImageNet trained with DLB.
_base_ = ['../_base_/resnet50_imagenet_sd.py']
