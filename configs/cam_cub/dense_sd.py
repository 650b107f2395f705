# Dense ResNet-50 CAM trained with CS-KD (T=4, lambda=3).
_base_ = ['../_base_/cam_r50_cub_sd.py']
