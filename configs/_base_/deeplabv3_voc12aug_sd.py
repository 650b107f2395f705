# DeepLabV3 (ResNet-50-D8) on Pascal VOC 2012 + aug, 512x512, 20k iterations,
# trained with self-distillation (DLB) -- mmseg's own config, with the
# segmentor swapped for the self-distilling one. No pruning here.
_base_ = ['mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py']
default_scope = 'epsd_mm'
model = dict(
    type='epsd_mm.SelfDistillSegmentor',
    segmentor_type='mmseg.EncoderDecoder',
    sd=dict(
        type='DLB',
        loss=dict(type='DLBLoss', temperature=3.0, loss_weight=1.0)))
default_hooks = dict(
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
