"""Tests of PHEW (Patil & Dovrolis, ICML 2021)."""
import copy
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from epsd_mm.pruning import (WeightPruner, compute_scores,
                             prunable_parameters, select_masks)
from epsd_mm.pruning.criteria import phew_scores, trace_layer_graph

INPUT = (1, 3, 32, 32)
CHAIN_INPUT = (1, 16, 8, 8)


def chain_net(seed: int = 0) -> nn.Sequential:
    """A plain chain Conv-Conv-Linear (no residual), as the authors walk;
    16 input channels so that every layer has thousands of weights and its
    density concentrates (4608, 9216 and 5120 weights)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 40))


def authors_phew_masks(network: nn.Module, prune_perc: float,
                       seed: int) -> list:
    """Re-statement of the authors' ``Prune/phew_utils.py``
    (``generate_probability`` and ``phew_masks``, plain-chain case without
    the ResNet shortcut branch and ``kernel_conserved=False``) of
    ShreyasMalakarjunPatil/PHEW at commit
    c4a0d40be8582a8ea51a4eb01338202f62277225: alternate forward walks
    (round-robin input units) and backward walks (round-robin output
    units), one weight per layer and walk, until ``int((1 - prune_perc /
    100) * N)`` weights are enabled. numpy / ``random`` as they do.
    """
    np.random.seed(seed)
    random.seed(seed)
    net = copy.deepcopy(network)
    weights = [p.detach().abs().numpy().astype(np.float64)
               for p in net.parameters() if len(p.size()) != 1]
    masks = [np.zeros_like(w) for w in weights]
    prob, reverse_prob, kernel_prob = [], [], []
    for w in weights:  # generate_probability
        norm = w.reshape(w.shape[0], w.shape[1], -1).sum(-1)  # get_norm
        rows = lambda m: [r / r.sum() if r.sum() != 0 else  # noqa: E731
                          np.full(len(r), 1.0 / len(r)) for r in m]
        reverse_prob.append(rows(norm))
        prob.append(rows(norm.T))
        if w.ndim == 4:
            kernel_prob.append(w / w.sum((2, 3), keepdims=True))
        else:
            kernel_prob.append(None)
    num = len(masks)
    num_weights = int((1 - prune_perc / 100.0) * sum(w.size for w in weights))
    input_robin, output_robin, conv_length, i = -1, -1, 0, 0
    while sum(m.sum() for m in masks) < num_weights:
        if i % 2 == 0:  # forward walk
            input_robin = (input_robin + 1) % masks[0].shape[1]
            unit, ctol = input_robin, False
            for k in range(num):
                if masks[k].ndim == 4:
                    out = np.random.choice(masks[k].shape[0], p=prob[k][unit])
                    kp = kernel_prob[k][out, unit]
                    entry = np.random.choice(kp.size, p=kp.reshape(-1))
                    masks[k][out, unit].reshape(-1)[entry] = 1
                    unit, ctol, conv_length = out, True, masks[k].shape[0]
                else:
                    if ctol:  # conv_to_linear_unit, forward
                        factor = masks[k].shape[1] // conv_length
                        unit = random.choice(range(factor)) + factor * unit
                        ctol = False
                    out = np.random.choice(masks[k].shape[0], p=prob[k][unit])
                    masks[k][out, unit] = 1
                    unit = out
        else:  # backward walk
            output_robin = (output_robin + 1) % masks[-1].shape[0]
            unit, ltoc, linear_length = output_robin, False, 0
            for k in reversed(range(num)):
                if masks[k].ndim == 2:
                    inp = np.random.choice(
                        masks[k].shape[1], p=reverse_prob[k][unit])
                    masks[k][unit, inp] = 1
                    unit, ltoc, linear_length = inp, True, masks[k].shape[1]
                else:
                    if ltoc:  # conv_to_linear_unit, backward
                        unit = unit // (linear_length // conv_length)
                        ltoc = False
                    inp = np.random.choice(
                        masks[k].shape[1], p=reverse_prob[k][unit])
                    kp = kernel_prob[k][unit, inp]
                    entry = np.random.choice(kp.size, p=kp.reshape(-1))
                    masks[k][unit, inp].reshape(-1)[entry] = 1
                    unit = inp
        i += 1
    return [torch.from_numpy(m) for m in masks]


def densities(masks) -> np.ndarray:
    return np.array([float(m.float().mean()) for m in masks])


def test_layer_densities_match_the_authors_phew_masks():
    """Per-layer densities at 90% sparsity equal the authors' to 1e-3.

    Both are stochastic with different random streams, so each side is
    averaged over 16 seeds: one run's density spreads by about 1e-3 per
    layer here, so the standard error of the difference of the means is
    about 3.5e-4. The authors stop at ``int(...)``, we at ``round(...)``
    weights (here the same count).
    """
    net = chain_net()
    params = prunable_parameters(net, scopes='*')
    seeds = range(16)
    authors = np.mean(
        [densities(authors_phew_masks(net, 90.0, s)) for s in seeds], 0)
    ours = np.mean([
        densities([
            s > 0 for s in phew_scores(
                net, params, 0.9, input_shape=CHAIN_INPUT,
                generator=torch.Generator().manual_seed(seed)).values()
        ]) for seed in seeds
    ], 0)
    np.testing.assert_allclose(ours, authors, rtol=0, atol=1e-3)


def test_visited_weights_lie_on_walks_and_reach_the_target():
    net = chain_net()
    params = prunable_parameters(net, scopes='*')
    total = sum(w.numel() for w in params.values())
    scores = list(phew_scores(
        net, params, 0.9, input_shape=CHAIN_INPUT,
        generator=torch.Generator().manual_seed(0)).values())
    visited = sum(int((s > 0).sum()) for s in scores)
    # the last walk completes: at most one weight per layer beyond target
    assert round(0.1 * total) <= visited < round(0.1 * total) + 3
    kernels = [(s > 0).flatten(2).any(2) if s.dim() == 4 else s > 0
               for s in scores]  # [out, in] units connected
    out0, in1 = kernels[0].any(1), kernels[1].any(0)
    out1 = kernels[1].any(1)
    in2 = kernels[2].any(0).view(32, 4).any(1)  # flatten: 4 per channel
    # every unit a walk reaches it also leaves (no dead ends)
    assert torch.equal(out0, in1)
    assert torch.equal(out1, in2)
    masks = select_masks(dict(zip(params, scores)), 0.9)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)
    assert all(bool((s[m] > 0).all()) for s, m in zip(scores,
                                                       masks.values()))


def test_same_seed_same_scores_model_and_rng_unchanged(
        seg_model, assert_unchanged):
    params = prunable_parameters(seg_model)
    rng = torch.get_rng_state()
    with assert_unchanged(seg_model):
        first = compute_scores(seg_model, criterion='phew', sparsity=0.9,
                               input_shape=INPUT, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    again = compute_scores(seg_model, criterion='phew', sparsity=0.9,
                           input_shape=INPUT, seed=3)
    other = compute_scores(seg_model, criterion='phew', sparsity=0.9,
                           input_shape=INPUT, seed=4)
    assert all(torch.equal(first[n], again[n]) for n in params)
    assert not all(torch.equal(first[n], other[n]) for n in params)


def test_resnet_graph_branches_at_downsample_blocks_only(seg_model):
    params = prunable_parameters(seg_model)
    order, succs, preds = trace_layer_graph(seg_model, params, INPUT)
    assert order[0] == 'backbone.stem.0.weight'
    assert [n for n in order if not succs[n]] == [order[-1]]
    forks = {n: s for n, s in succs.items() if len(s) > 1}
    assert sorted(forks) == [f'backbone.layer{i}.1.conv2.weight'
                             for i in (1, 2, 3)]
    for i in (2, 3, 4):
        block = f'backbone.layer{i}.0.'
        assert preds[f'backbone.layer{i}.1.conv1.weight'] == [
            block + 'downsample.0.weight', block + 'conv2.weight'] or preds[
                f'backbone.layer{i}.1.conv1.weight'] == [
                    block + 'conv2.weight', block + 'downsample.0.weight']


def test_tiny_seg_net_keeps_weights_in_every_layer_at_90(seg_model):
    scores = compute_scores(seg_model, criterion='phew', sparsity=0.9,
                            input_shape=INPUT, seed=0)
    masks = select_masks(scores, 0.9)  # raises on a collapsed layer
    assert all(m.any() for m in masks.values())


def test_weight_pruner_two_rounds(seg_model, seg_batches):
    pruner = WeightPruner(sparsity=0.9, criterion='phew', rounds=2)
    total = sum(w.numel() for w in prunable_parameters(seg_model).values())
    report = pruner.prune(seg_model, batches=seg_batches[:1])
    assert report.round == 2
    assert report.kept == round(0.1 * total)


def test_layerwise_quotas_filled_by_position_are_reported(seg_model):
    """Weights no walk visited all score 0: global selection keeps only
    visited ones (but for the last walk's overshoot: a few of the weights
    visited once); layer-wise quotas fill up with unvisited ones by
    position, and the report says so."""
    model = copy.deepcopy(seg_model)
    report = WeightPruner(sparsity=0.9, criterion=dict(
        type='phew', input_shape=INPUT, seed=0)).prune(model)
    assert 0 < report.tied_kept < 10 and report.warnings() == []
    report = WeightPruner(sparsity=0.9, selection='layerwise',
                          criterion=dict(type='phew', input_shape=INPUT,
                                         seed=0)).prune(seg_model)
    assert report.tied_kept > 0.01 * report.kept
    assert any('chosen by position, not by phew' in w
               for w in report.warnings())


def test_needs_sparsity_and_scores_weights_only(seg_model):
    with pytest.raises(ValueError, match='needs the target `sparsity`'):
        compute_scores(seg_model, criterion='phew', input_shape=INPUT)
    with pytest.raises(ValueError, match='seed must be an integer'):
        compute_scores(seg_model, criterion='phew', sparsity=0.9,
                       input_shape=INPUT, seed=0.5)
    from epsd_mm.pruning.criteria import CRITERIA
    assert 'phew' not in CRITERIA.channel_names()
