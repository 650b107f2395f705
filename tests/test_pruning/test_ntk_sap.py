"""Tests of NTK-SAP (the ``ntk_sap`` criterion)."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from epsd_mm.models.scoring import scoring_loss_of
from epsd_mm.pruning import (WeightPruner, build_criterion, compute_scores,
                             get_masks, prunable_parameters, select_masks)
from epsd_mm.pruning.criteria import ntk_sap_scores

INPUT = (2, 3, 16, 16)

# ---- the authors' formulation, re-stated --------------------------------


class MaskedConv2d(nn.Conv2d):
    """Their ``Layers.layers.Conv2d``: the weight times a ``weight_mask``
    buffer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer('weight_mask', torch.ones_like(self.weight))

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.weight_mask,
                                  self.bias)


class MaskedLinear(nn.Linear):

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer('weight_mask', torch.ones_like(self.weight))

    def forward(self, x):
        return F.linear(x, self.weight * self.weight_mask, self.bias)


class SmallNet(nn.Module):
    """Float64 conv-BN-ReLU x2, pooled, linear classifier."""

    def __init__(self, conv=nn.Conv2d, linear=nn.Linear) -> None:
        super().__init__()
        self.conv1 = conv(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = conv(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = linear(6, 5)
        self.generator = None  # of the oracle's _initialize_weights

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def _initialize_weights(self):
        # the model's own init, as their models define one; here PyTorch's
        # default init of Conv/Linear weights, which ntk_sap(reinit=True)
        # draws, from the oracle's generator
        for m in self.modules():
            if isinstance(m, (MaskedConv2d, MaskedLinear)):
                nn.init.kaiming_uniform_(
                    m.weight, a=math.sqrt(5), generator=self.generator)


def _masked_parameters(model):
    return [(m.weight_mask, m.weight) for m in model.modules()
            if isinstance(m, (MaskedConv2d, MaskedLinear))]


def _oracle_score(model, data, repeats, epsilon, reinit, gen):
    """``NTKSAP.score`` with every random draw taken from ``gen``."""
    masked = _masked_parameters(model)
    for m, p in masked:
        m.requires_grad = True
        p.requires_grad = False
    model_mod = copy.deepcopy(model)
    model_mod.eval()
    for module, module_mod in zip(model.modules(), model_mod.modules()):
        if hasattr(module, 'weight_mask'):
            module_mod.weight_mask = module.weight_mask
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
            module_mod.momentum = 1.0
    for _ in range(repeats):
        for batch in [data]:  # their prune loader: one batch here
            if reinit:
                model._initialize_weights()
            x = torch.randn(batch.shape, generator=gen, dtype=batch.dtype)
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.reset_running_stats()
                model(x)
            model.eval()
            out = model(x)
            with torch.no_grad():  # perturb()
                for (_, p), (_, p_mod) in zip(masked,
                                              _masked_parameters(model_mod)):
                    p_mod.data = p.data + epsilon * torch.randn(
                        p.shape, generator=gen, dtype=p.dtype)
            for module, module_mod in zip(model.modules(),
                                          model_mod.modules()):
                if isinstance(module, nn.BatchNorm2d):
                    module_mod.running_mean = module.running_mean
                    module_mod.running_var = module.running_var
                    module_mod.num_batches_tracked = (
                        module.num_batches_tracked)
            out_mod = model_mod(x)
            (torch.norm(out - out_mod, dim=-1)**2).sum().backward()
            model.train()
    scores = [(m.grad * (m != 0)).detach().abs() for m, _ in masked]
    for m, p in masked:
        m.grad = None
        m.requires_grad = False
        p.requires_grad = True
    return scores


def _oracle_prune_loop(model, data, density, epochs, repeats, epsilon,
                       reinit, gen):
    """``prune.prune_loop`` (train mode, exponential schedule, global
    masks by ``kthvalue``); returns the last scores and the masks."""
    model.train()
    masked = _masked_parameters(model)
    for epoch in range(epochs):
        scores = _oracle_score(model, data, repeats, epsilon, reinit, gen)
        sparse = density**((epoch + 1) / epochs)
        flat = torch.cat([s.flatten() for s in scores])
        k = int((1.0 - sparse) * flat.numel())
        if k >= 1:
            threshold = torch.kthvalue(flat, k).values
            for (mask, _), score in zip(masked, scores):
                mask.copy_((score > threshold).to(mask.dtype))
    return scores, [mask.clone() for mask, _ in masked]


@pytest.mark.parametrize('reinit', [True, False])
def test_matches_the_authors_ntksap_and_prune_loop(reinit, assert_unchanged):
    """Re-states YiteWang/NTK-SAP (commit
    e23682bc8798795107961af1afb236d349bf5c00) ``Pruners/pruners.py: class
    NTKSAP.score`` and ``prune.py: prune_loop`` (train mode as in
    ``scripts/run.sh``, exponential schedule, global masks), in their
    formulation: ``weight_mask`` buffers on a deep copy, masks as the leaves,
    the perturbed copy sharing masks and BN statistics. Their
    ``randn_like``/``_initialize_weights`` draws come from one generator,
    in their order (weights, input, noise); ours from a generator with the
    same seed. Scores equal to rounding, masks equal."""
    torch.manual_seed(0)
    model = SmallNet().double().train()
    oracle = SmallNet(MaskedConv2d, MaskedLinear).double()
    oracle.load_state_dict(model.state_dict(), strict=False)
    oracle.generator = torch.Generator().manual_seed(7)
    data = torch.zeros(INPUT, dtype=torch.float64)
    # a sparsity at which their count (ceil) and ours (round) agree at
    # every step
    sparsity, epochs = 0.73, 3
    params = prunable_parameters(model, scopes='*')
    total = sum(p.numel() for p in params.values())
    for k in range(1, epochs + 1):  # their kthvalue count == our top-k
        density = (1 - sparsity)**(k / epochs)
        assert (total - int((1.0 - density) * total) == round(
            (1.0 - (1.0 - density)) * total))

    expected, their_masks = _oracle_prune_loop(
        oracle, data, 1 - sparsity, epochs, repeats=2, epsilon=0.01,
        reinit=reinit, gen=oracle.generator)
    with assert_unchanged(model):
        scores = ntk_sap_scores(
            model, params, input_shape=INPUT, sparsity=sparsity,
            iterations=epochs, repeats=2, epsilon=0.01, reinit=reinit,
            generator=torch.Generator().manual_seed(7))
    for name, want in zip(params, expected):
        torch.testing.assert_close(scores[name], want, rtol=1e-9, atol=0)
    ours = select_masks(scores, sparsity)
    for name, want in zip(params, their_masks):
        assert torch.equal(ours[name], want.bool()), name


def test_model_rng_and_momentum_unchanged(seg_model, assert_unchanged):
    seg_model.backbone.layer2.eval()  # mixed modes must survive
    momenta = [m.momentum for m in seg_model.modules()
               if isinstance(m, nn.BatchNorm2d)]
    rng = torch.get_rng_state()
    with assert_unchanged(seg_model):
        compute_scores(seg_model, criterion='ntk_sap', input_shape=INPUT,
                       iterations=1)
    assert torch.equal(torch.get_rng_state(), rng)
    assert momenta == [m.momentum for m in seg_model.modules()
                       if isinstance(m, nn.BatchNorm2d)]


def test_same_seed_same_scores(seg_model):
    kwargs = dict(criterion='ntk_sap', input_shape=INPUT, iterations=1)
    a = compute_scores(seg_model, seed=3, **kwargs)
    b = compute_scores(seg_model, seed=3, **kwargs)
    c = compute_scores(seg_model, seed=4, **kwargs)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)
    torch.manual_seed(5)  # seed=None: the run's seed
    d = compute_scores(seg_model, **kwargs)
    torch.manual_seed(5)
    e = compute_scores(seg_model, **kwargs)
    assert all(torch.equal(d[n], e[n]) for n in d)


def test_tiny_seg_net_scores_every_weight_finite(seg_model, seg_batches):
    params = prunable_parameters(seg_model)
    messages = []
    scores = compute_scores(
        seg_model, batches=seg_batches, criterion='ntk_sap', sparsity=0.9,
        iterations=2, progress=lambda msg, frac: messages.append(msg))
    assert list(scores) == list(params)
    for name, score in scores.items():
        assert score.shape == params[name].shape
        assert torch.isfinite(score).all(), name
        assert score.sum() > 0, name
    assert messages == ['iteration 1/2', 'iteration 2/2']
    # weights pruned in step 1 (density 0.1 ** 0.5) score 0
    nonzero = sum(int((s > 0).sum()) for s in scores.values())
    total = sum(p.numel() for p in params.values())
    assert nonzero <= round(0.1**0.5 * total)


def test_loss_is_refused(seg_model, seg_batches, seg_loss_fn):
    pruner = WeightPruner(
        sparsity=0.5, criterion=dict(type='ntk_sap', iterations=1),
        scopes='backbone')
    with pytest.raises(ValueError, match='data-free'):
        pruner.prune(seg_model, seg_loss_fn, seg_batches)
    with pytest.raises(ValueError, match="'ntk_sap' is data-free"):
        scoring_loss_of(build_criterion('ntk_sap'), 'task')


def test_weight_pruner_rounds(seg_model, seg_batches):
    pruner = WeightPruner(
        sparsity=0.8,
        criterion=dict(type='ntk_sap', iterations=2, seed=0),
        rounds=2,
        min_density=0.01)
    assert pruner.num_batches == 1
    first = pruner.prune_round(seg_model, None, seg_batches[:1])
    kept_first = {n: m.clone() for n, m in get_masks(seg_model).items()}
    report = pruner.prune_round(seg_model, None, seg_batches[:1])
    assert pruner.done and first.num_batches == 0
    masks = get_masks(seg_model)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == report.kept
    assert report.kept == round(0.2 * total)
    # what round 1 pruned stays pruned
    assert all(not (masks[n] & ~kept_first[n]).any() for n in masks)


def test_invalid_options():
    for kwargs, match in [(dict(iterations=0), 'iterations'),
                          (dict(repeats=1.5), 'repeats'),
                          (dict(epsilon=0), 'epsilon'),
                          (dict(reinit='yes'), 'reinit'),
                          (dict(seed='a'), 'seed'),
                          (dict(input_shape=(3, )), 'input_shape')]:
        with pytest.raises(ValueError, match=match):
            build_criterion('ntk_sap', **kwargs)
    assert build_criterion('ntk_sap').uses_sparsity
    assert not build_criterion('ntk_sap', iterations=1).uses_sparsity


def test_iterative_needs_sparsity(seg_model):
    with pytest.raises(ValueError, match='sparsity'):
        compute_scores(seg_model, criterion='ntk_sap', input_shape=INPUT)
