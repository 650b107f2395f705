"""Self-distillation losses (plain ``nn.Module`` s registered in ``MODELS``).

Each loss derives from :class:`BaseSDLoss`: a ``loss_name`` (the key to put
in a loss dict), a ``loss_weight`` and a class attribute
``replaces_task_loss`` telling models whether the loss already contains the
task cross-entropy (PS-KD) or is added to it (DLB, CS-KD, cross-correlation).
Which batches and targets a loss is called with is the business of the SD
*method* (:mod:`epsd_mm.sd_methods`).
"""
from .base import BaseSDLoss
from .cross_correlation_loss import CrossCorrelationLoss
from .cskd_loss import CSKDLoss
from .dlb_loss import DLBLoss
from .kd_utils import kl_div_from_probs, masked_mean, soft_kl_div
from .pskd_loss import PSKDLoss

__all__ = [
    'BaseSDLoss', 'DLBLoss', 'PSKDLoss', 'CSKDLoss', 'CrossCorrelationLoss', 'soft_kl_div',
    'kl_div_from_probs', 'masked_mean'
]
