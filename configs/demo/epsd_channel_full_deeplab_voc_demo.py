# Whole-model structured EPSD on the demo data, CPU size:
# configs/deeplab_voc/epsd_channel_full.py on the demo DeepLabV3 — 50% of the
# channels of the backbone, the ASPP head and the auxiliary FCN head removed
# before training (class channels kept whole).
_base_ = ['./epsd_channel_deeplab_voc_demo.py']
default_hooks = dict(
    pruning=dict(scopes=('backbone', 'decode_head', 'auxiliary_head')))
