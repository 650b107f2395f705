"""tools/analysis/get_flops.py on a pruned checkpoint of the tiny EPSD
model."""
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config

from epsd_mm.deploy.checkpoint import build_model
from epsd_mm.models import trace_forward
from epsd_mm.pruning import (ChannelGraph, apply_masks,
                             compute_channel_scores, prunable_parameters,
                             random_scores, select_channels, select_masks,
                             slim_channels)

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

TIMEOUT = 300


def _total(stdout: str):
    """(params, effective params, FLOPs, effective FLOPs) of the total
    row."""
    row = re.search(r'\| total +\|(.*)\|', stdout).group(1)
    cells = [c.strip().replace(',', '') for c in row.split('|')]
    return int(cells[0]), int(cells[1]), int(cells[3]), int(cells[4])


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, voc_root, helpers):
    """Tiny config file, a checkpoint of it pruned to 80% with random masks,
    and the model."""
    tmp = tmp_path_factory.mktemp('flops')
    cfg = helpers.make_tiny_cfg(voc_root, str(tmp / 'work'))
    cfg_path = str(tmp / 'tiny.py')
    cfg.dump(cfg_path)
    model = build_model(cfg)
    masks = select_masks(
        random_scores(prunable_parameters(model, ('backbone', ))), 0.8)
    apply_masks(model, masks)
    checkpoint = str(tmp / 'pruned.pth')
    torch.save(dict(meta={}, state_dict=model.state_dict()), checkpoint)
    return cfg_path, checkpoint, model, masks


def _get_flops(helpers, *args) -> str:
    proc = subprocess.run([
        sys.executable,
        osp.join(helpers.repo_root, 'tools', 'analysis', 'get_flops.py'), *args
    ],
                          env=helpers.subprocess_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def test_get_flops_of_a_pruned_checkpoint(tiny, helpers):
    cfg_path, checkpoint, model, masks = tiny
    dense_flops = FlopAnalyzer(model, (torch.zeros(1, 3, 64, 64), )).total()
    params = parameter_count(model)['']

    pruned = _get_flops(helpers, cfg_path, checkpoint)
    assert 'input 1x3x64x64' in pruned and 'the masks of' in pruned
    total, effective, flops, effective_flops = _total(pruned)
    assert (total, flops) == (params, dense_flops)
    assert effective == params - sum(int((~m).sum()) for m in masks.values())
    # 80% of the backbone's conv MACs are gone; BN, heads etc. remain
    backbone = re.search(r'\| backbone +\|(.*)\|', pruned).group(1)
    cells = [
        int(c.strip().replace(',', '')) for c in backbone.split('|')
        if c.strip() and '.' not in c
    ]
    assert cells[3] < 0.3 * cells[2]
    assert effective_flops < flops


def test_get_flops_of_a_slim_checkpoint(tiny, helpers, tmp_path):
    """A channel-pruned checkpoint is counted on its slim architecture,
    after the dense one."""
    cfg_path, _, _, _ = tiny
    model = build_model(Config.fromfile(cfg_path))
    graph = ChannelGraph(model, torch.zeros(1, 3, 64, 64), trace_forward)
    scores = compute_channel_scores(
        graph, criterion='random', generator=torch.Generator().manual_seed(0))
    spec = slim_channels(graph, select_channels(scores, 0.5))
    checkpoint = str(tmp_path / 'slim.pth')
    # the layout of epsd_mm < 0.4 (slim spec under its own meta key) is read
    torch.save(
        dict(meta={'epsd_slim_spec': spec}, state_dict=model.state_dict()),
        checkpoint)
    out = _get_flops(helpers, cfg_path, checkpoint)
    dense_part, slim_part = out.split('slim architecture of')
    kept, total = spec['channels']['kept'], spec['channels']['total']
    assert f'{kept:,} of {total:,} channels in scope kept' in slim_part
    dense_params, _, dense_flops, _ = _total(dense_part)
    slim_params, _, slim_flops, _ = _total(slim_part)
    assert slim_params == parameter_count(model)['']
    assert slim_flops == FlopAnalyzer(
        model.eval(), (torch.zeros(1, 3, 64, 64), )).total()
    assert slim_params < 0.6 * dense_params
    assert slim_flops < 0.6 * dense_flops
