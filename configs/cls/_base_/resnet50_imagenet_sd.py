# ResNet-50 on ImageNet trained with self-distillation (DLB, T=3, alpha=1):
# mmpretrain's own resnet50_8xb32_in1k.py recipe (8 GPUs x 32 images, SGD lr
# 0.1, weight decay 1e-4, 100 epochs, lr x0.1 at 30, 60 and 90, 224 px
# random resized crops) with the classifier swapped for the self-distilling
# one. No pruning here.
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py']
default_scope = 'epsd_mm'
model = dict(
    type='epsd_mm.SelfDistillClassifier',
    classifier_type='mmpretrain.ImageClassifier',
    sd=dict(
        type='DLB',
        loss=dict(type='DLBLoss', temperature=3.0, loss_weight=1.0)),
    # Random init: mmpretrain zero-initialises the last BN of every residual
    # block, which would give every residual conv a zero SNIP/GraSP score.
    backbone=dict(zero_init_residual=False))
# mmpretrain's accuracy, and calibration (ECE, AURC, E-AURC) next to it
val_evaluator = [
    dict(type='mmpretrain.Accuracy', topk=(1, 5)),
    dict(type='epsd_mm.CalibrationMetric')
]
test_evaluator = val_evaluator
default_hooks = dict(
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
