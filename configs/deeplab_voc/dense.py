# Dense DeepLabV3, plain cross-entropy (mmseg's recipe).
_base_ = ['../_base_/deeplabv3_voc12aug_sd.py']
model = dict(sd=None)
