# Dense VGG-19 on CIFAR-100, plain cross-entropy (mmpretrain's recipe).
_base_ = ['../_base_/vgg19_cifar100_sd.py']
model = dict(sd=None)
