# EPSD on SegFormer MiT-B2 (VOC12aug); MiT-B2 widths as in mmseg's
# segformer_mit-b2_8xb2-160k_ade20k-512x512.py.
_base_ = ['./epsd_segformer_mit-b0.py']
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b2_20220624-66e8bf70.pth'  # noqa
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        embed_dims=64,
        num_layers=[3, 4, 6, 3]),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
