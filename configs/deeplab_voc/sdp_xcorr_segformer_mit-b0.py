# Self-distilled pruning (O'Neill et al.) on SegFormer MiT-B0: gradual
# magnitude pruning of every backbone weight matrix (attention projections
# included) to 90% over the first 10k iterations, with the cross-correlation
# term to the unpruned self on the last MiT stage (256 channels).
_base_ = [
    '../_base_/models/segformer_mit-b0_sd.py',
    'mmseg::_base_/datasets/pascal_voc12_aug.py'
]
model = dict(
    sd=dict(
        _delete_=True,
        type='CrossCorrelation',
        loss=dict(
            type='CrossCorrelationLoss',
            lambda_offdiag=5e-3,
            loss_weight=1e-2)))
default_hooks = dict(
    pruning=dict(
        type='epsd_mm.GradualPruningHook',
        sparsity=0.9,
        start=0,
        end=10000,
        interval=500))
