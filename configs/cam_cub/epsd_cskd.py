# EPSD with CS-KD (the main CUB configuration, configs/epsd_cam_cub.py),
# under the name other configs inherit it by:
#   _base_ = ['epsd_mm::cam_cub/epsd_cskd.py']
_base_ = ['../epsd_cam_cub.py']
