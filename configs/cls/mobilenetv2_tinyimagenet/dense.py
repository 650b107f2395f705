# Dense MobileNet-v2 on Tiny-ImageNet, plain cross-entropy (mmpretrain's
# recipe).
_base_ = ['../_base_/mobilenetv2_tinyimagenet_sd.py']
model = dict(sd=None)
