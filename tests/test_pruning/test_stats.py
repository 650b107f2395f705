"""Tests of sparsity statistics and their table."""
import torch

from epsd_mm.pruning import (LayerSparsity, apply_masks,
                             format_sparsity_table, overall_sparsity,
                             prunable_parameters, random_scores,
                             select_masks, sparsity_stats)


def pruned_model(model, sparsity=0.75):
    params = prunable_parameters(model)
    masks = select_masks(
        random_scores(params, torch.Generator().manual_seed(0)), sparsity)
    apply_masks(model, masks)
    return masks


def test_stats_of_model_and_masks_agree(seg_model):
    masks = pruned_model(seg_model)
    from_model = sparsity_stats(seg_model)
    assert from_model == sparsity_stats(masks)
    assert [s.name for s in from_model] == list(masks)
    for stat, mask in zip(from_model, masks.values()):
        assert stat.numel == mask.numel()
        assert stat.zeros == int((~mask).sum())
        assert stat.density == 1 - stat.zeros / stat.numel
        assert stat.sparsity == 1 - stat.density
    total = sum(m.numel() for m in masks.values())
    expected = (total - round(0.25 * total)) / total
    assert overall_sparsity(from_model) == expected


def test_model_stats_count_actual_zero_weights(seg_model):
    masks = pruned_model(seg_model)
    name = 'backbone.layer1.0.conv1.weight'
    with torch.no_grad():
        dict(seg_model.named_parameters())[name][~masks[name]] = 1.0
    stats = {s.name: s for s in sparsity_stats(seg_model)}
    assert stats[name].zeros == 0
    assert stats[name].density == 1.0


def test_unpruned_model_has_no_stats(seg_model):
    assert sparsity_stats(seg_model) == []
    assert overall_sparsity([]) == 0.0
    assert format_sparsity_table([]) == 'no masked weights'


def test_table_is_aligned_with_total_row():
    stats = [
        LayerSparsity('backbone.conv1.weight', 216, 108, 0.5),
        LayerSparsity('backbone.layer1.0.conv1.weight', 1000, 900, 0.1),
    ]
    table = format_sparsity_table(stats)
    lines = table.splitlines()
    assert len(lines) == 6  # header, rule, 2 layers, rule, total
    assert len({len(line) for line in lines}) == 1
    assert lines[0].split() == [
        'layer', 'params', 'zeros', 'density', 'sparsity'
    ]
    assert lines[2].split() == [
        'backbone.conv1.weight', '216', '108', '50.00%', '50.00%'
    ]
    assert lines[-1].split() == ['total', '1,216', '1,008', '17.11%',
                                 '82.89%']
