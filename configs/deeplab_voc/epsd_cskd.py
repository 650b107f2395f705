# EPSD with class-wise CS-KD: batches of (anchor, partner) image pairs that
# share a class; the partner's per-class mean prediction is the soft target.
_base_ = ['../epsd_deeplab_voc.py']
model = dict(
    sd=dict(
        _delete_=True,
        type='CSKD',
        loss=dict(type='CSKDLoss', temperature=4.0, loss_weight=1.0)))
train_dataloader = dict(
    batch_size=4,  # two (anchor, partner) pairs per GPU
    sampler=dict(
        _delete_=True,
        type='epsd_mm.ClassPairSampler',
        shuffle=True,
        exclude_classes=(0, )))  # pair images by objects, not background
