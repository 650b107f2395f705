# EPSD with DLB (T=3, alpha=1), the main configuration
# (../epsd_resnet18_cifar10.py), under the name other configs inherit it by:
#   _base_ = ['epsd_mm::cls/resnet18_cifar10/epsd_dlb.py']
_base_ = ['../epsd_resnet18_cifar10.py']
