import math

import pytest
import torch
from torch import nn

from epsd_mm.deploy import (fold_masks, identical_state_dicts,
                            load_sparse_checkpoint, save_sparse_checkpoint)
from epsd_mm.pruning import apply_masks, random_scores, select_masks


def _folded(sparsity: float, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 33, 3))
    weights = {'0.weight': model[0].weight, '2.weight': model[2].weight}
    apply_masks(model, select_masks(random_scores(weights), sparsity))
    return fold_masks(model.state_dict())


def test_round_trip_is_bit_exact(tmp_path):
    folded, masks = _folded(0.9)
    # a kept -0.0 must come back as -0.0, not +0.0
    kept = masks['2.weight'].flatten().nonzero()[0, 0]
    folded['2.weight'].view(-1)[kept] = -0.0
    path = str(tmp_path / 'sparse.pth')
    save_sparse_checkpoint(path, folded, masks, meta=dict(note='x'))
    restored, meta = load_sparse_checkpoint(path, with_meta=True)
    assert identical_state_dicts(restored, folded)
    assert torch.signbit(restored['2.weight'].view(-1)[kept])
    assert meta == dict(note='x')


def test_identical_state_dicts_compares_bits():
    a = {'w': torch.tensor([0.0, 1.0])}
    assert identical_state_dicts(a, {'w': torch.tensor([0.0, 1.0])})
    assert not identical_state_dicts(a, {'w': torch.tensor([-0.0, 1.0])})
    assert not identical_state_dicts(
        a, {'w': torch.tensor([0.0, 1.0], dtype=torch.float64)})


def test_pruned_tensors_take_bitmask_plus_values(tmp_path):
    folded, masks = _folded(0.9)
    summary = save_sparse_checkpoint(
        str(tmp_path / 'sparse.pth'), folded, masks)
    numel = {k: m.numel() for k, m in masks.items()}
    kept = {k: int(m.sum()) for k, m in masks.items()}
    assert summary.num_sparse == 2
    assert summary.dense_bytes == 4 * sum(numel.values())
    assert summary.sparse_bytes == sum(
        math.ceil(numel[k] / 8) + 4 * kept[k] for k in masks)
    assert summary.ratio <= 0.15


def test_dense_tensors_stay_dense_when_smaller(tmp_path):
    folded, masks = _folded(0.01)  # a bitmask would add 1/32 for 1% saved
    path = str(tmp_path / 'sparse.pth')
    summary = save_sparse_checkpoint(path, folded, masks)
    assert summary.num_sparse == 0
    assert identical_state_dicts(load_sparse_checkpoint(path), folded)


def test_load_refuses_other_files(tmp_path):
    path = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict=nn.Conv2d(1, 1, 1).state_dict()), path)
    with pytest.raises(ValueError, match='not a sparse checkpoint'):
        load_sparse_checkpoint(path)
