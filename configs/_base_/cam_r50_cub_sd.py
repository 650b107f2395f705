# ResNet-50 CAM on CUB-200-2011 weakly supervised object localisation, dense,
# trained with CS-KD (T=4, lambda=3) on (anchor, partner) batches of the same
# class. No pruning here (configs/epsd_cam_cub.py adds it).
# Schedule: the WSOL benchmark recipe for ResNet-50 CAM on CUB (SGD, lr 1.7e-4
# with 10x on the head, 50 epochs, x0.1 every 15 epochs).
_base_ = [
    './models/cam_r50.py', './datasets/cub_bs32.py',
    'mmdet::_base_/default_runtime.py'
]
default_scope = 'epsd_mm'

model = dict(
    sd=dict(
        type='CSKD',
        loss=dict(type='CSKDLoss', temperature=4.0, loss_weight=3.0)))
train_dataloader = dict(
    batch_size=64,  # 32 anchors + 32 partners, as in CS-KD
    sampler=dict(
        _delete_=True, type='epsd_mm.ClassPairSampler', shuffle=True))

max_epochs = 50
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=1.7e-4, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.0)}))
param_scheduler = [
    dict(type='StepLR', by_epoch=True, step_size=15, gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=32)

default_hooks = dict(
    checkpoint=dict(
        interval=5, save_best='wsol/maxboxacc_v2', rule='greater'),
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
visualizer = dict(
    _delete_=True,
    type='epsd_mm.CAMVisualizer',
    vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer')
