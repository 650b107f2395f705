"""Pruned weights stay zero under mixed precision (CPU autocast + GradScaler).

MMEngine's ``AmpOptimWrapper`` (``--amp``) requires a GPU; it runs the same
sequence (autocast forward, scaled backward, unscale, ``scaler.step``), which
these tests reproduce with torch's CPU AMP.
"""
import pytest
import torch
from torch import nn

from epsd_mm.pruning import (apply_masks, get_masks, magnitude_scores,
                             prunable_parameters, register_mask_enforcement,
                             select_masks)


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.backbone(x)


@pytest.mark.parametrize('optimizer', ['sgd', 'adamw'])
def test_zeros_survive_bf16_autocast_and_grad_scaler(optimizer):
    torch.manual_seed(0)
    net = Net()
    masks = select_masks(magnitude_scores(prunable_parameters(net)), 0.7)
    apply_masks(net, masks)
    if optimizer == 'sgd':
        optim = torch.optim.SGD(
            net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    else:
        optim = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.1)
    register_mask_enforcement(optim, net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**8)
    for _ in range(10):
        x = torch.randn(4, 3, 16, 16)
        y = torch.randint(0, 4, (4, ))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(net(x), y)
        optim.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optim)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(optim)
        scaler.update()
    params = dict(net.named_parameters())
    changed = 0
    for name, mask in get_masks(net).items():
        assert torch.count_nonzero(params[name][~mask]) == 0, name
        changed += int(not torch.equal(params[name][mask],
                                       before[name][mask]))
    assert changed == len(masks)  # the kept weights did train
