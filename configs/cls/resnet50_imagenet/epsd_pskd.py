# EPSD with PS-KD (alpha_T=0.8): ProsPr on the CE-replacing PS-KD loss, then
# PS-KD training; the teacher is the snapshot of the previous epoch (kept by
# SelfDistillHook).
_base_ = ['../epsd_resnet50_imagenet.py']
model = dict(
    sd=dict(
        _delete_=True, type='PSKD', loss=dict(type='PSKDLoss', alpha_T=0.8)))
