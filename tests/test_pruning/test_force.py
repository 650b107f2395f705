"""Tests of FORCE and Iterative SNIP (criterion ``'force'``)."""
import copy
from typing import List, Tuple

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from epsd_mm.pruning import (WeightPruner, compute_scores, get_masks,
                             prunable_parameters, select_masks, snip_scores)
from epsd_mm.pruning.criteria import build_criterion, check_scores_channels
from epsd_mm.pruning.criteria.force import force_densities, force_scores

Batch = Tuple[Tensor, Tensor]
SPARSITY = 0.9


class SmallConvNet(nn.Module):
    """Float64 conv net with log-softmax outputs, as the authors' models
    (their loss is ``F.nll_loss`` of the network's output)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Linear(32, 5)
        self.double().train()

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(self.classifier(self.features(x).flatten(1)), 1)


def _loss(model: nn.Module, batch: Batch) -> Tensor:
    inputs, targets = batch
    return F.nll_loss(model(inputs), targets)


def _batches() -> List[Batch]:
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64),
             torch.randint(0, 5, (4, ), generator=gen)) for _ in range(2)]


# An independent re-statement of naver/force, pruning/pruning_algos.py
# (commit 7494eed332b0494c283d6f3a2ed7a033895a6ccb): get_average_gradients,
# get_average_saliencies, get_mask, iterative_pruning, and apply_prune_mask of
# pruning/mask_networks.py, in the authors' formulation (a loop over
# model.modules() picking Conv2d/Linear, in-place masks on deep copies).
def _prunable_layers(net: nn.Module) -> List[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _ref_average_gradients(net, batches):
    gradients = [0 for _ in _prunable_layers(net)]
    for inputs, targets in batches:
        net.zero_grad()
        F.nll_loss(net(inputs), targets).backward()
        for i, layer in enumerate(_prunable_layers(net)):
            gradients[i] += layer.weight.grad
    return [g / len(batches) for g in gradients]


def _ref_get_mask(saliency, keep_fraction):
    all_scores = torch.cat([s.flatten() for s in saliency])
    k = int(len(all_scores) * keep_fraction)
    threshold = torch.topk(all_scores, k, sorted=True)[0][-1]
    return [(s >= threshold).float() for s in saliency]


def _ref_apply_mask(net, masks, hooks):
    handles = []
    for layer, mask in zip(_prunable_layers(net), masks):
        layer.weight.data[mask == 0.] = 0.
        if hooks:
            handles.append(layer.weight.register_hook(
                lambda g, mask=mask: g * mask))
    return handles


def _ref_iterative_pruning(ori_net, batches, keep_fraction, prune_method,
                           num_steps):
    """Returns the final masks and the last step's saliencies."""
    net = copy.deepcopy(ori_net)
    original = [layer.weight.detach() for layer in _prunable_layers(net)]
    steps = [np.exp(0 - ((x + 1) * (0 - np.log(keep_fraction)) / num_steps))
             for x in range(num_steps)]
    mask, handles = None, []
    for perc in steps:
        gradients = _ref_average_gradients(net, batches)
        weights = original if prune_method == 3 else [
            layer.weight for layer in _prunable_layers(net)]
        saliency = [(w * g).abs() for w, g in zip(weights, gradients)]
        if mask is not None and prune_method < 3:
            low = torch.cat([s.flatten() for s in saliency]).min()
            for s, m in zip(saliency, mask):
                s[m == 0.] = low
        for h in handles:
            h.remove()
        mask = _ref_get_mask(saliency, perc)
        if prune_method == 3:
            net = copy.deepcopy(ori_net)
            _ref_apply_mask(net, mask, hooks=False)
        else:
            handles = _ref_apply_mask(net, mask, hooks=True)
    return mask, saliency


def _check_counts_agree(total: int, num_steps: int) -> None:
    """The authors keep int(d N), we keep round(d N): make sure the test's
    sizes have no step where the two differ."""
    ours = force_densities(SPARSITY, num_steps)
    theirs = [np.exp(-t * -np.log(1 - SPARSITY) / num_steps)
              for t in range(1, num_steps + 1)]
    for a, b in zip(ours, theirs):
        assert round(a * total) == int(b * total), (a, b, total)


@pytest.mark.parametrize('variant,prune_method', [('force', 3),
                                                  ('iter_snip', 1)])
def test_matches_the_authors_iterative_pruning(variant, prune_method):
    """Against a re-statement of naver/force ``iterative_pruning`` (with
    ``get_average_saliencies``, ``get_mask``; pruning/pruning_algos.py at
    commit 7494eed332b0494c283d6f3a2ed7a033895a6ccb), ``prune_method=3``
    (FORCE) and ``1`` (Iterative SNIP), 4 exponential steps to sparsity 0.9
    on the same float64 batches: the same final mask exactly, the last
    step's saliencies to 1e-10 (layer sizes chosen so that the authors'
    ``int(d N)`` equals our ``round(d N)`` at every step)."""
    model, batches, num_steps = SmallConvNet(), _batches(), 4
    params = prunable_parameters(model, scopes='*')
    total = sum(w.numel() for w in params.values())
    _check_counts_agree(total, num_steps)
    ref_masks, ref_saliency = _ref_iterative_pruning(
        model, batches, 1 - SPARSITY, prune_method, num_steps)

    scores = force_scores(model, _loss, batches, params, SPARSITY,
                          num_steps=num_steps, variant=variant)
    masks = select_masks(scores, SPARSITY, on_collapse='allow')
    for (name, mask), ref, ref_s in zip(masks.items(), ref_masks,
                                        ref_saliency):
        assert torch.equal(mask, ref.bool()), name
        torch.testing.assert_close(scores[name], ref_s, rtol=0, atol=1e-10)


def test_force_revives_and_iter_snip_does_not():
    """FORCE's final mask keeps some weights its previous step pruned
    (their saliency uses the dense weight); Iterative SNIP's never does."""
    model, batches = SmallConvNet(), _batches()
    params = prunable_parameters(model, scopes='*')
    for variant in ('force', 'iter_snip'):
        last = force_scores(model, _loss, batches, params, SPARSITY,
                            num_steps=4, variant=variant)
        before = force_scores(model, _loss, batches, params,
                              1 - (1 - SPARSITY)**(3 / 4), num_steps=3,
                              variant=variant)
        kept = select_masks(last, SPARSITY, on_collapse='allow')
        previous = select_masks(before, 1 - (1 - SPARSITY)**(3 / 4),
                                on_collapse='allow')
        revived = sum(int((kept[n] & ~previous[n]).sum()) for n in kept)
        assert (revived > 0) == (variant == 'force'), variant


def test_one_step_is_snip():
    model, batches = SmallConvNet(), _batches()
    params = prunable_parameters(model, scopes='*')
    scores = force_scores(model, _loss, batches, params, SPARSITY,
                          num_steps=1)
    snip = snip_scores(model, _loss, batches, params)
    for name in params:  # FORCE averages the gradient, SNIP sums it
        torch.testing.assert_close(scores[name] * len(batches), snip[name])


def test_densities_follow_the_schedules():
    exp = force_densities(0.99, 4)
    assert exp == pytest.approx([0.01**(t / 4) for t in range(1, 5)])
    assert exp[-1] == 1 - 0.99  # exactly the target
    assert force_densities(0.8, 4, 'linear') == pytest.approx(
        [0.8, 0.6, 0.4, 0.2])


def test_model_unchanged_and_progress_per_step(seg_model, seg_batches,
                                               seg_loss_fn, assert_unchanged):
    seg_model.backbone.layer2.eval()  # mixed modes must survive
    calls = []
    with assert_unchanged(seg_model):
        scores = compute_scores(
            seg_model, seg_loss_fn, seg_batches[:1], criterion='force',
            sparsity=0.9, num_steps=3,
            progress=lambda m, f: calls.append((m, f)))
    assert [f for _, f in calls] == pytest.approx([1 / 3, 2 / 3, 1])
    assert calls[0][0].startswith('step 1/3')
    masks = select_masks(scores, 0.9)
    total = sum(s.numel() for s in scores.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)


def test_missing_sparsity_and_bad_options_are_refused(seg_model, seg_batches,
                                                      seg_loss_fn):
    with pytest.raises(ValueError, match='needs it; pass `sparsity`'):
        compute_scores(seg_model, seg_loss_fn, seg_batches[:1],
                       criterion='force')
    with pytest.raises(ValueError, match='num_steps must be an integer'):
        WeightPruner(criterion=dict(type='FORCE', num_steps=0))
    with pytest.raises(ValueError, match='schedule must be one of'):
        WeightPruner(criterion=dict(type='force', schedule='cos'))
    with pytest.raises(ValueError, match='variant must be one of'):
        WeightPruner(criterion=dict(type='force', variant='grasp_it'))
    with pytest.raises(ValueError, match="'force' scores weights only"):
        check_scores_channels(build_criterion('force'))


def test_weight_pruner_rounds_with_force():
    """EPSD-It rounds with FORCE: round 2 scores the masked model."""
    model, batches = SmallConvNet(), _batches()
    pruner = WeightPruner(sparsity=SPARSITY, scopes='*', rounds=2,
                          num_batches=2,
                          criterion=dict(type='force', num_steps=2))
    first = pruner.prune_round(model, _loss, batches)
    masks = {n: m.clone() for n, m in get_masks(model).items()}
    report = pruner.prune_round(model, _loss, batches)
    assert first.target == pytest.approx(1 - (1 - SPARSITY)**0.5)
    assert report.sparsity == pytest.approx(SPARSITY, abs=1e-3)
    for name, mask in get_masks(model).items():
        assert not (mask & ~masks[name]).any(), name  # masks only shrink
