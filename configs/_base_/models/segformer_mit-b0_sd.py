# SegFormer (MiT-B0) for Pascal VOC (21 classes), trained with
# self-distillation (DLB), 20k iterations: mmseg's MiT-B0 model, runtime and
# schedule with SegFormer's AdamW recipe (lr 6e-5, head lr x10, no decay on
# norms and position blocks) and the ImageNet-pretrained MiT-B0 of mmseg's
# model zoo. mmseg ships SegFormer for ADE20K and Cityscapes only; configs
# add the dataset (mmseg's VOC12aug or the demo data) next to this. No
# pruning here.
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_20k.py'
]
default_scope = 'epsd_mm'
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b0_20220624-7e0fe6dd.pth'  # noqa
model = dict(
    type='epsd_mm.SelfDistillSegmentor',
    segmentor_type='mmseg.EncoderDecoder',
    sd=dict(
        type='DLB',
        loss=dict(type='DLBLoss', temperature=3.0, loss_weight=1.0)),
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=21))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'head': dict(lr_mult=10.)
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=20000,
        by_epoch=False)
]
default_hooks = dict(
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
