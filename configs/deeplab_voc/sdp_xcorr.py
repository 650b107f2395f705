# Self-distilled pruning (O'Neill et al.): gradual magnitude pruning to 90%
# over the first 10k iterations (cubic schedule, a step every 500), while a
# cross-correlation loss pulls the pruned backbone's features towards those of
# the same network with its masks lifted. The loss weight is not tuned: the
# diagonal term sums over the 2048 channels of ResNet-50's last stage.
_base_ = ['../_base_/deeplabv3_voc12aug_sd.py']
model = dict(
    sd=dict(
        _delete_=True,
        type='CrossCorrelation',
        loss=dict(
            type='CrossCorrelationLoss',
            lambda_offdiag=5e-3,
            loss_weight=1e-3)))
default_hooks = dict(
    pruning=dict(
        type='epsd_mm.GradualPruningHook',
        sparsity=0.9,
        start=0,
        end=10000,
        interval=500))
