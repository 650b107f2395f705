# EPSD on SegFormer MiT-B1 (VOC12aug); MiT-B1 widths as in mmseg's
# segformer_mit-b1_8xb2-160k_ade20k-512x512.py.
_base_ = ['./epsd_segformer_mit-b0.py']
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b1_20220624-02e5a6a1.pth'  # noqa
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        embed_dims=64,
        num_layers=[2, 2, 2, 2]),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
