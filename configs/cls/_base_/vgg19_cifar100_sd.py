# VGG-19 on CIFAR-100 trained with self-distillation (DLB, T=3, alpha=1).
# The network is the CIFAR-sized VGG-19 of the pruning-at-initialisation
# literature built from mmpretrain parts: mmpretrain's VGG-19-BN backbone
# without its ImageNet classifier (num_classes=-1: 512x1x1 features at 32x32
# input), global average pooling and one linear layer 512 -> 100. Data and
# schedule are mmpretrain's CIFAR-100 dataset config and its CIFAR schedule
# (8 GPUs x 16 images, SGD lr 0.1, weight decay 1e-4, 200 epochs, lr x0.1 at
# 100 and 150). No pruning here.
_base_ = [
    'mmpretrain::_base_/models/vgg19bn.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py'
]
default_scope = 'epsd_mm'
model = dict(
    type='epsd_mm.SelfDistillClassifier',
    classifier_type='mmpretrain.ImageClassifier',
    sd=dict(
        type='DLB',
        loss=dict(type='DLBLoss', temperature=3.0, loss_weight=1.0)),
    backbone=dict(num_classes=-1),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
# mmpretrain's accuracy, and calibration (ECE, AURC, E-AURC) next to it
val_evaluator = [
    dict(type='mmpretrain.Accuracy', topk=(1, 5)),
    dict(type='epsd_mm.CalibrationMetric')
]
test_evaluator = val_evaluator
default_hooks = dict(
    self_distill=dict(type='epsd_mm.SelfDistillHook'),
    finite_loss=dict(type='epsd_mm.FiniteLossHook'))
