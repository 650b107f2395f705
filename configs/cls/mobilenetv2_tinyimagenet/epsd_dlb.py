# EPSD with DLB (T=3, alpha=1), the main configuration
# (../epsd_mobilenetv2_tinyimagenet.py), under the name other configs
# inherit it by:
#   _base_ = ['epsd_mm::cls/mobilenetv2_tinyimagenet/epsd_dlb.py']
_base_ = ['../epsd_mobilenetv2_tinyimagenet.py']
