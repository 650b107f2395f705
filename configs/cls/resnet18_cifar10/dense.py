# Dense ResNet-18 on CIFAR-10, plain cross-entropy (mmpretrain's recipe).
_base_ = ['../_base_/resnet18_cifar10_sd.py']
model = dict(sd=None)
