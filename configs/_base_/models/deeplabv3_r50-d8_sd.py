# DeepLabV3 (ResNet-50-D8) for Pascal VOC (21 classes), 512x512 crops, 20k
# iterations, trained with self-distillation (DLB): mmseg's own
# deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py recipe without its dataset
# (configs add mmseg's VOC12aug or the demo data next to this), with the
# segmentor swapped for the self-distilling one. No pruning here.
_base_ = [
    'mmseg::_base_/models/deeplabv3_r50-d8.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_20k.py'
]
default_scope = 'epsd_mm'
model = dict(
    type='epsd_mm.SelfDistillSegmentor',
    segmentor_type='mmseg.EncoderDecoder',
    sd=dict(
        type='DLB',
        loss=dict(type='DLBLoss', temperature=3.0, loss_weight=1.0)),
    data_preprocessor=dict(size=(512, 512)),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))
default_hooks = dict(
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
