# EPSD with DLB (T=3, alpha=1): ProsPr on CE + DLB, then DLB training on
# ordinary shuffled batches of 32 (plus the previous batch, replayed by DLB).
_base_ = ['../epsd_cam_cub.py']
model = dict(
    sd=dict(
        _delete_=True,
        type='DLB',
        loss=dict(type='DLBLoss', temperature=3.0, loss_weight=1.0)))
train_dataloader = dict(
    batch_size=32,
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
