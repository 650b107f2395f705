"""epsd_mm.analysis.compare_masks and tools/analysis/compare_masks.py on
checkpoints made by applying hand-built masks (or removing hand-picked
channels) and writing the record the hooks write."""
import importlib.util
import subprocess
import sys

import pytest
import torch
from PIL import Image
from torch import nn

from epsd_mm.analysis import (check_comparable, compare_masks,
                              format_comparison, load_pruned_checkpoint,
                              plot_densities)
from epsd_mm.deploy import build_model, model_complexity
from epsd_mm.models import trace_forward
from epsd_mm.pruning import (ChannelGraph, PruningRecord, apply_masks,
                             compute_channel_scores, prunable_parameters,
                             random_scores, select_channels, select_masks,
                             slim_channels)

TOOL = 'tools/analysis/compare_masks.py'


class Net(nn.Module):
    """Two 3x3 convs (8 channels) in the backbone, a 1x1 head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                                      nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1),
                                      nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


def _save(path, model, slim_spec=None, granularity='weight'):
    """A checkpoint as tools/train.py writes it: state dict and record."""
    checkpoint = dict(meta={}, state_dict=model.state_dict())
    record = PruningRecord(slim_spec=slim_spec)
    record.set_stage('EarlyPruningHook',
                     dict(sparsity=0.5, granularity=granularity),
                     dict(rounds_done=1))
    record.write(checkpoint)
    torch.save(checkpoint, path)
    return str(path)


def _weight_ckpt(path, keep0, keep1):
    """Net with the masks ``keep0``/``keep1`` (flat lists of 0/1) on its
    two backbone convs."""
    net = Net()
    weights = [net.backbone[0].weight, net.backbone[3].weight]
    masks = {
        name: torch.tensor(keep, dtype=torch.bool).reshape(w.shape)
        for name, keep, w in zip(('backbone.0.weight',
                                  'backbone.3.weight'), (keep0,
                                                         keep1), weights)
    }
    apply_masks(net, masks)
    return _save(path, net)


def _flat(n, kept):
    return [int(i in kept) for i in range(n)]


N0, N1 = 8 * 3 * 9, 8 * 8 * 9  # 216, 576 weights


@pytest.fixture
def pair(tmp_path):
    """A and B with hand-built masks; their overlap computed by hand."""
    a = _weight_ckpt(tmp_path / 'a.pth', _flat(N0, range(0, 100)),
                     _flat(N1, range(0, 300)))
    b = _weight_ckpt(tmp_path / 'b.pth', _flat(N0, range(50, 150)),
                     [0] * N1)  # B's second layer collapses
    return a, b


def test_densities_iou_and_collapse_by_hand(pair):
    a, b = pair
    result = compare_masks(
        [load_pruned_checkpoint(a, 'A'),
         load_pruned_checkpoint(b, 'B')])
    assert result.kind == 'weight'
    assert result.layers == ['backbone.0.weight', 'backbone.3.weight']
    assert [s.density
            for s in result.stats[0]] == pytest.approx([100 / N0, 300 / N1])
    assert [s.density
            for s in result.stats[1]] == pytest.approx([100 / N0, 0.0])
    # layer 0: kept 0..99 vs 50..149 -> 50 shared of 150; layer 1: 0 of 300
    assert result.layer_iou[1] == pytest.approx([50 / 150, 0.0])
    assert result.overall_iou[(0, 1)] == pytest.approx(50 / 450)
    assert result.collapsed == [[], ['backbone.3.weight']]
    table = format_comparison(result)
    assert 'IoU B vs A' in table and '0.333' in table and '0.111' in table
    assert 'B: backbone.3.weight' in table and 'A: none' in table
    assert f'{400 / (N0 + N1):.2%}' in table  # A's overall density


def test_identical_and_disjoint_masks(tmp_path):
    half0, half1 = range(0, N0 // 2), range(0, N1 // 2)
    a = _weight_ckpt(tmp_path / 'a.pth', _flat(N0, half0), _flat(N1, half1))
    rest = _weight_ckpt(tmp_path / 'rest.pth', _flat(N0, range(N0 // 2, N0)),
                        _flat(N1, range(N1 // 2, N1)))
    pruned = [load_pruned_checkpoint(p) for p in (a, a, rest)]
    result = compare_masks(pruned)
    assert result.layer_iou[1] == [1.0, 1.0]
    assert result.layer_iou[2] == [0.0, 0.0]
    assert result.overall_iou == {(0, 1): 1.0, (0, 2): 0.0, (1, 2): 0.0}
    # more than two: per layer vs the first, overall every pair
    assert 'every pair' in format_comparison(result)


def test_channel_checkpoints_compare_kept_channel_indices(tmp_path):

    def slim(path, kept0, kept1):
        net = Net()
        graph = ChannelGraph(net, torch.zeros(1, 3, 8, 8))
        keep = {
            'backbone.0': torch.tensor(_flat(8, kept0), dtype=torch.bool),
            'backbone.3': torch.tensor(_flat(8, kept1), dtype=torch.bool)
        }
        spec = slim_channels(graph, keep)
        return _save(path, net, spec, 'channel')

    a = slim(tmp_path / 'a.pth', [0, 1, 2, 3], [0, 1])
    b = slim(tmp_path / 'b.pth', [2, 3, 4, 5], [0, 1])
    result = compare_masks([load_pruned_checkpoint(p) for p in (a, b)])
    assert result.kind == 'channel'
    assert result.layers == ['backbone.0', 'backbone.3']
    assert [s.density for s in result.stats[1]] == [0.5, 0.25]
    assert result.layer_iou[1] == pytest.approx([2 / 6, 1.0])
    assert result.overall_iou[(0, 1)] == pytest.approx(4 / 8)
    assert 'removed channels' in format_comparison(result)


def test_plot_is_written(pair, tmp_path):
    result = compare_masks([load_pruned_checkpoint(p) for p in pair])
    out = tmp_path / 'plots' / 'density.png'
    plot_densities(result, str(out))
    with Image.open(out) as image:
        assert image.width > 100 and image.height > 100


def test_bad_input_is_named(pair, tmp_path):
    a, _ = pair
    dense = tmp_path / 'dense.pth'
    torch.save(dict(meta={}, state_dict=Net().state_dict()), dense)
    with pytest.raises(ValueError, match='dense.pth holds no pruning masks'):
        load_pruned_checkpoint(str(dense))
    # one layer only: another pruning scope
    net = Net()
    apply_masks(net, {'backbone.0.weight': net.backbone[0].weight != 0})
    other = load_pruned_checkpoint(_save(tmp_path / 'one.pth', net))
    with pytest.raises(ValueError,
                       match="first mismatch is "
                       "'backbone.3.weight', pruned in .*a.pth"):
        check_comparable([load_pruned_checkpoint(a), other])
    # weights vs channels
    slim_net = Net()
    spec = slim_channels(
        ChannelGraph(slim_net, torch.zeros(1, 3, 8, 8)), {
            'backbone.0': torch.ones(8, dtype=torch.bool),
            'backbone.3': torch.tensor(_flat(8, [0]), dtype=torch.bool)
        })
    channel = load_pruned_checkpoint(
        _save(tmp_path / 'slim.pth', slim_net, spec, 'channel'))
    with pytest.raises(ValueError,
                       match='weight masks, .*slim.pth by '
                       'removed channels'):
        check_comparable([load_pruned_checkpoint(a), channel])
    # a slim spec of epsd_mm before "groups": counts only
    del spec['groups']
    with pytest.raises(ValueError, match='records only channel counts'):
        load_pruned_checkpoint(
            _save(tmp_path / 'old.pth', slim_net, spec, 'channel'))


def test_effective_params_and_flops_as_get_flops(tmp_path, voc_root, helpers):
    cfg = helpers.make_tiny_cfg(voc_root, str(tmp_path))
    paths, models = [], []
    for seed in (0, 1):
        model = build_model(cfg)
        scores = random_scores(prunable_parameters(model, ('backbone', )),
                               generator=torch.Generator().manual_seed(seed))
        apply_masks(model, select_masks(scores, 0.8))
        paths.append(_save(tmp_path / f'{seed}.pth', model))
        models.append(model)
    result = compare_masks([load_pruned_checkpoint(p) for p in paths], cfg)
    for row, model in zip(result.complexity, models):
        assert row == model_complexity(model, torch.zeros(1, 3, 64, 64))[-1]
    # two independent random 20% masks: IoU about .2 * .2 / (1 - .8 * .8)
    assert result.overall_iou[(0, 1)] == pytest.approx(1 / 9, abs=0.01)
    assert 'effective FLOPs' in format_comparison(result)


def test_slim_checkpoint_counted_against_the_dense_network(
        tmp_path, voc_root, helpers):
    cfg = helpers.make_tiny_cfg(voc_root, str(tmp_path))
    inputs = torch.zeros(1, 3, 64, 64)
    paths, slim = [], []
    for seed in (0, 1):
        model = build_model(cfg)
        graph = ChannelGraph(model, inputs, trace_forward)
        scores = compute_channel_scores(
            graph,
            criterion='random',
            generator=torch.Generator().manual_seed(seed))
        spec = slim_channels(graph, select_channels(scores, 0.5))
        paths.append(_save(tmp_path / f'{seed}.pth', model, spec, 'channel'))
        slim.append(model_complexity(model, inputs, {})[-1])
    dense = model_complexity(build_model(cfg), inputs, {})[-1]
    result = compare_masks([load_pruned_checkpoint(p) for p in paths], cfg)
    for row, slim_row in zip(result.complexity, slim):
        assert (row.params, row.flops) == (dense.params, dense.flops)
        assert (row.effective_params, row.effective_flops) == (
            slim_row.params, slim_row.flops)
    assert sum(s.numel for s in result.stats[0]) == spec['channels']['total']


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *args],
                          capture_output=True,
                          text=True)


def _tool():
    spec = importlib.util.spec_from_file_location('compare_masks_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('argv,message', [
    (['a.pth'], 'at least two checkpoints'),
    (['a.pth', 'b.pth', '--labels', 'A'], '1 names for 2 checkpoints'),
])
def test_tool_argument_errors(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [TOOL, *argv])
    with pytest.raises(SystemExit) as exit_info:
        _tool().parse_args()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.e2e
def test_tool_prints_the_table_and_writes_the_plot(pair, tmp_path):
    out = tmp_path / 'cmp.png'
    result = _run(*pair, '--labels', 'A', 'B', '--out', str(out))
    assert result.returncode == 0, result.stderr
    assert 'IoU B vs A' in result.stdout
    assert 'not counted (pass --config' in result.stdout
    assert out.exists()
