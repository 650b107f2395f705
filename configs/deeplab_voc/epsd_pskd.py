# EPSD with PS-KD: ProsPr on CE-replacing PS-KD loss, teacher = snapshot of the
# previous epoch (refreshed by SelfDistillHook).
_base_ = ['../epsd_deeplab_voc.py']
model = dict(sd_loss=dict(_delete_=True, type='PSKDLoss', alpha_T=0.8))
