# EPSD with CS-KD (T=4, lambda=1): ProsPr on CE + CS-KD, then CS-KD training
# on (anchor, partner) batches of the same class (half the batch are
# partners).
_base_ = ['../epsd_vgg19_cifar100.py']
model = dict(
    sd=dict(
        _delete_=True,
        type='CSKD',
        loss=dict(type='CSKDLoss', temperature=4.0, loss_weight=1.0)))
train_dataloader = dict(
    sampler=dict(_delete_=True, type='epsd_mm.ClassPairSampler', shuffle=True))
