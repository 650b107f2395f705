# Dense ResNet-50 on ImageNet, plain cross-entropy (mmpretrain's recipe).
_base_ = ['../_base_/resnet50_imagenet_sd.py']
model = dict(sd=None)
