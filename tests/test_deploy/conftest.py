"""A pruned checkpoint of the tiny EPSD DeepLabV3, as a run writes it."""
from types import SimpleNamespace

import pytest
import torch
from mmseg.datasets import PascalVOCDataset
from torch import nn

from epsd_mm.deploy.checkpoint import build_model
from epsd_mm.pruning import (PruningRecord, apply_masks, prunable_parameters,
                             random_scores, register_mask_enforcement,
                             select_masks)

SPARSITY = 0.9


def randomise_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Give BN layers non-trivial statistics and affine parameters, so that
    outputs depend on every one of them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(
                    torch.randn(shape, generator=generator))
                module.running_var.copy_(
                    torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(
                    torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator))


@pytest.fixture(scope='package')
def pruned(voc_root, tmp_path_factory, helpers) -> SimpleNamespace:
    """The tiny config (file), its model pruned to 90% with random masks,
    and a checkpoint of it holding what runs store next to the weights:
    optimizer state, a PS-KD teacher, the pruning record (with
    GradualPruningHook's pruned values), the config text and dataset meta."""
    tmp = tmp_path_factory.mktemp('pruned')
    cfg = helpers.make_tiny_cfg(voc_root, str(tmp / 'work'))
    cfg_path = str(tmp / 'tiny_epsd.py')
    cfg.dump(cfg_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    randomise_batch_norms(model)
    masks = select_masks(
        random_scores(prunable_parameters(model, ('backbone', ))), SPARSITY)
    apply_masks(model, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    register_mask_enforcement(optimizer, model)
    model.train()
    loss = model(torch.randn(2, 3, 64, 64), mode='tensor').square().mean()
    loss.backward()
    optimizer.step()
    model.eval()
    checkpoint = dict(
        meta=dict(
            cfg=cfg.pretty_text,
            dataset_meta=dict(PascalVOCDataset.METAINFO),
            seed=0,
            iter=3),
        state_dict=model.state_dict(),
        optimizer=optimizer.state_dict(),
        sd_teacher_state_dict=model.state_dict())
    record = PruningRecord()
    record.set_stage(
        'EarlyPruningHook',
        dict(granularity='weight', sparsity=SPARSITY, criterion='prospr',
             loss='sd'), dict(rounds_done=1))
    record.set_stage(
        'GradualPruningHook', dict(criterion='magnitude', sparsity=SPARSITY),
        state=dict(pruned_values={name: torch.zeros(1) for name in masks}))
    record.write(checkpoint)
    ckpt_path = str(tmp / 'iter_3.pth')
    torch.save(checkpoint, ckpt_path)
    return SimpleNamespace(
        cfg=cfg,
        cfg_path=cfg_path,
        checkpoint=ckpt_path,
        model=model,
        masks=masks,
        sparsity=SPARSITY)
