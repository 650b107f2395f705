# EPSD with PS-KD (alpha_T=0.8): ProsPr on the CE-replacing PS-KD loss, then
# PS-KD training; the teacher is the snapshot of the previous epoch (kept by
# SelfDistillHook). Ordinary shuffled batches of 32.
_base_ = ['../epsd_cam_cub.py']
model = dict(
    sd=dict(
        _delete_=True, type='PSKD', loss=dict(type='PSKDLoss', alpha_T=0.8)))
train_dataloader = dict(
    batch_size=32,
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
