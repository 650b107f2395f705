# Dense ResNet-18 on CIFAR-10 trained with DLB.
_base_ = ['../_base_/resnet18_cifar10_sd.py']
