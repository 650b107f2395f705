# EPSD with DLB (T=3, alpha=1), the main configuration
# (../epsd_resnet50_imagenet.py), under the name other configs inherit it by:
#   _base_ = ['epsd_mm::cls/resnet50_imagenet/epsd_dlb.py']
_base_ = ['../epsd_resnet50_imagenet.py']
