# EPSD with DLB (T=3, alpha=1), the main configuration
# (../epsd_vgg19_cifar100.py), under the name other configs inherit it by:
#   _base_ = ['epsd_mm::cls/vgg19_cifar100/epsd_dlb.py']
_base_ = ['../epsd_vgg19_cifar100.py']
