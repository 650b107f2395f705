# Dense VGG-19 on CIFAR-100 trained with DLB.
_base_ = ['../_base_/vgg19_cifar100_sd.py']
