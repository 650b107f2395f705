# EPSD with PS-KD: ProsPr on CE-replacing PS-KD loss, teacher = snapshot of the
# previous epoch (refreshed every epoch).
_base_ = ['../epsd_deeplab_voc.py']
model = dict(
    sd=dict(
        _delete_=True, type='PSKD', loss=dict(type='PSKDLoss', alpha_T=0.8)))
