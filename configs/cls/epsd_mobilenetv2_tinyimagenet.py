# EPSD on Tiny-ImageNet with MobileNet-v2 at the paper's 79% sparsity: prune
# the randomly initialised network before training by the ProsPr
# meta-gradient (3 SGD steps) of CE + DLB, then train with DLB. Schedule:
# mmpretrain's MobileNet-v2 ImageNet recipe; data: Tiny-ImageNet through
# mmpretrain's CustomDataset (see ./_base_/tinyimagenet_bs32.py for the
# folder layout). The baseline family is in ./mobilenetv2_tinyimagenet/.
# Change the sparsity with default_hooks.pruning.sparsity (one key).
_base_ = ['./_base_/mobilenetv2_tinyimagenet_sd.py']
default_hooks = dict(
    pruning=dict(type='epsd_mm.EarlyPruningHook', sparsity=0.79))
