# EPSD on OCRNet (HRNetV2-W18, mmseg's CascadeEncoderDecoder) on VOC12aug:
# prune the HRNet backbone to 90% by the ProsPr meta-gradient of the cascade's
# losses + DLB on the last stage (OCR head), then train with DLB. The same
# snippet works on any mmseg segmentor config: set segmentor_type to its
# segmentor class.
_base_ = ['mmseg::ocrnet/ocrnet_hr18_4xb4-20k_voc12aug-512x512.py']
default_scope = 'epsd_mm'
model = dict(
    type='epsd_mm.SelfDistillSegmentor',
    segmentor_type='mmseg.CascadeEncoderDecoder',
    sd=dict(type='DLB', loss=dict(type='DLBLoss', temperature=3.0)))
default_hooks = dict(
    pruning=dict(type='epsd_mm.EarlyPruningHook', sparsity=0.9),
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
