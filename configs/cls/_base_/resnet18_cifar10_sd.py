# ResNet-18 (CIFAR stem) on CIFAR-10 trained with self-distillation (DLB,
# T=3, alpha=1, the DLB paper's defaults): mmpretrain's own
# resnet18_8xb16_cifar10.py recipe (8 GPUs x 16 images, SGD lr 0.1, weight
# decay 1e-4, 200 epochs, lr x0.1 at epochs 100 and 150, random crop +
# flip), with the classifier swapped for the self-distilling one. No pruning
# here.
_base_ = ['mmpretrain::resnet/resnet18_8xb16_cifar10.py']
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
    dict(type='mmpretrain.Accuracy', topk=(1, )),
    dict(type='epsd_mm.CalibrationMetric')
]
test_evaluator = val_evaluator
default_hooks = dict(
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
