"""Tests of SynFlow."""
import copy

import pytest
import torch
import torch.nn as nn

from epsd_mm.pruning import (apply_masks, compute_scores,
                             prunable_parameters, select_masks,
                             synflow_scores)

INPUT = (1, 3, 32, 32)


def test_closed_form_on_linear_chain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False),
                          nn.Linear(4, 2, bias=False))
    params = prunable_parameters(model, scopes='*')
    scores = synflow_scores(model, params, input_shape=(1, 3))
    a1, a2 = model[0].weight.detach().abs(), model[1].weight.detach().abs()
    # R = 1^T |W2| |W1| 1
    expected1 = a1 * a2.sum(0)[:, None]
    expected2 = a2 * a1.sum(1)[None, :]
    torch.testing.assert_close(scores['0.weight'], expected1.double())
    torch.testing.assert_close(scores['1.weight'], expected2.double())
    assert (model[0].weight < 0).any()  # signs were not touched


def test_iterative_rounds_give_exact_sparsity_and_restore_modes(
        seg_model, assert_unchanged):
    seg_model.backbone.layer2.eval()  # mixed modes must survive
    params = prunable_parameters(seg_model)
    total = sum(w.numel() for w in params.values())
    with assert_unchanged(seg_model):
        scores = synflow_scores(
            seg_model, params, input_shape=INPUT, sparsity=0.9, rounds=3)
    masks = select_masks(scores, 0.9)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(0.1 * total)
    # weights pruned in rounds 1-2 score 0; round 2 kept density 0.1^(2/3)
    nonzero = sum(int((s > 0).sum()) for s in scores.values())
    assert kept <= nonzero <= round(0.1**(2 / 3) * total)


def test_iteration_equals_rescoring_the_pruned_network(seg_model):
    params = prunable_parameters(seg_model)
    sparsity = 0.9
    first = synflow_scores(seg_model, params, input_shape=INPUT)
    pruned = copy.deepcopy(seg_model)
    apply_masks(pruned, select_masks(first, 1 - (1 - sparsity)**0.5))
    second = synflow_scores(
        pruned, prunable_parameters(pruned), input_shape=INPUT)
    expected = select_masks(second, sparsity, on_collapse='allow')

    iterative = synflow_scores(
        seg_model, params, input_shape=INPUT, sparsity=sparsity, rounds=2)
    got = select_masks(iterative, sparsity, on_collapse='allow')
    assert all(torch.equal(got[n], expected[n]) for n in params)
    one_shot = select_masks(first, sparsity, on_collapse='allow')
    assert not all(torch.equal(got[n], one_shot[n]) for n in params)


def test_branch_pruned_in_an_earlier_round_is_reported_as_collapsed(
        seg_model):
    # SynFlow may prune a whole residual branch (the skip carries the flow);
    # intermediate rounds allow it, the final selection reports it
    scores = synflow_scores(
        seg_model,
        prunable_parameters(seg_model),
        input_shape=INPUT,
        sparsity=0.95,
        rounds=5)
    with pytest.raises(ValueError, match='backbone.layer4'):
        select_masks(scores, 0.95)
    floored = select_masks(scores, 0.95, min_density=0.01)
    assert all(m.any() for m in floored.values())


def test_forward_fn_with_tuple_output(seg_model):
    scores = compute_scores(
        seg_model, criterion='synflow', input_shape=INPUT,
        forward_fn=lambda model, x: model.backbone(x))
    assert all(s.sum() > 0 for s in scores.values())


def test_float64_avoids_overflow_of_deep_networks():
    model = nn.Sequential(*[nn.Linear(32, 32, bias=False)
                            for _ in range(30)])
    for layer in model:
        nn.init.constant_(layer.weight, 1.0)  # R = 32^31, beyond float32
    params = prunable_parameters(model, scopes='*')
    scores = synflow_scores(model, params, input_shape=(1, 32))
    assert all(torch.isfinite(s).all() for s in scores.values())
    overflow = synflow_scores(
        model, params, input_shape=(1, 32), dtype=torch.float32)
    with pytest.raises(ValueError, match='NaN or infinite'):
        select_masks(overflow, 0.5)


def test_invalid_arguments(seg_model):
    params = prunable_parameters(seg_model)
    with pytest.raises(ValueError, match='rounds'):
        synflow_scores(seg_model, params, input_shape=INPUT, rounds=0)
    with pytest.raises(ValueError, match='sparsity'):
        synflow_scores(seg_model, params, input_shape=INPUT, rounds=2)
    with pytest.raises(TypeError, match='forward_fn'):
        synflow_scores(seg_model, params, input_shape=INPUT,
                       forward_fn=lambda model, x: 'not a tensor')
