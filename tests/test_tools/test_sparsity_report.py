import subprocess
import pytest
import sys

import torch
from mmseg.models.backbones import ResNetV1c
from PIL import Image
from torch import nn

from epsd_mm.pruning import (apply_masks, format_sparsity_table,
                             prunable_parameters, random_scores, select_masks,
                             sparsity_stats)

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

TOOL = 'tools/analysis/sparsity_report.py'


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = ResNetV1c(depth=18, stem_channels=8, base_channels=8)


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *args],
                          capture_output=True,
                          text=True)


def test_table_and_plot_of_a_pruned_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = Net()
    masks = select_masks(random_scores(prunable_parameters(net)), 0.8)
    apply_masks(net, masks)
    ckpt = tmp_path / 'iter_1.pth'
    meta = dict(epsd_pruning=dict(EarlyPruningHook=dict(
        config=dict(sparsity=0.8), progress={})))
    torch.save(dict(meta=meta, state_dict=net.state_dict()), ckpt)

    out = tmp_path / 'density.png'
    result = _run(str(ckpt), '--out', str(out))
    assert result.returncode == 0, result.stderr
    expected = format_sparsity_table(sparsity_stats(net))
    assert expected in result.stdout
    assert '80.00%' in expected.splitlines()[-1]
    assert 'target sparsity: 0.8000' in result.stdout
    with Image.open(out) as image:
        assert image.width > 100 and image.height > 100


def test_unpruned_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / 'dense.pth'
    torch.save(dict(state_dict=Net().state_dict()), ckpt)
    result = _run(str(ckpt))
    assert result.returncode != 0
    assert 'holds no pruning masks' in result.stderr
