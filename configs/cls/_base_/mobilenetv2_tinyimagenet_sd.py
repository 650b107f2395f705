# MobileNet-v2 on Tiny-ImageNet trained with self-distillation (DLB, T=3,
# alpha=1): mmpretrain's mobilenet-v2_8xb32_in1k.py recipe (its model,
# schedule and runtime: MobileNetV2 1.0x, 8 GPUs x 32 images, SGD lr 0.045,
# weight decay 4e-5, 300 epochs, lr x0.98 per epoch) with its ImageNet data
# replaced by Tiny-ImageNet (./tinyimagenet_bs32.py) and a 200-class head.
# The backbone is mmpretrain's, unchanged: at 64x64 input its last feature
# map is 2x2. No pruning here.
_base_ = [
    'mmpretrain::_base_/models/mobilenet_v2_1x.py', './tinyimagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256_epochstep.py',
    'mmpretrain::_base_/default_runtime.py'
]
default_scope = 'epsd_mm'
model = dict(
    type='epsd_mm.SelfDistillClassifier',
    classifier_type='mmpretrain.ImageClassifier',
    sd=dict(
        type='DLB',
        loss=dict(type='DLBLoss', temperature=3.0, loss_weight=1.0)),
    head=dict(num_classes=200))
# mmpretrain's accuracy, and calibration (ECE, AURC, E-AURC) next to it
val_evaluator = [
    dict(type='mmpretrain.Accuracy', topk=(1, 5)),
    dict(type='epsd_mm.CalibrationMetric')
]
test_evaluator = val_evaluator
default_hooks = dict(
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
