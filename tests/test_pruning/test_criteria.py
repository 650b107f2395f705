"""Tests of the criteria registry, SNIP, GraSP, magnitude and random."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from epsd_mm.pruning import (CRITERIA, apply_masks, compute_scores,
                             grasp_scores, magnitude_scores,
                             prunable_parameters, random_scores, select_masks,
                             snip_scores)

#: Small options of the criteria the generic tests run with (one entry per
#: criterion that needs some, to keep these tests fast).
CRITERION_KWARGS = {
    'phew': dict(input_shape=(1, 3, 32, 32), sparsity=0.8, seed=0),
    'synflow': dict(input_shape=(1, 3, 32, 32), sparsity=0.8, rounds=2),
    'force': dict(sparsity=0.8, num_steps=2),
    'ntk_sap': dict(input_shape=(2, 3, 32, 32), sparsity=0.8, iterations=2),
}


def criterion_kwargs(criterion):
    return CRITERION_KWARGS.get(criterion, {})


@pytest.mark.parametrize('criterion', CRITERIA.names)
def test_every_criterion_scores_every_weight_and_leaves_model_unchanged(
        criterion, seg_model, seg_batches, seg_loss_fn, assert_unchanged):
    params = prunable_parameters(seg_model)
    with assert_unchanged(seg_model):
        scores = compute_scores(
            seg_model, seg_loss_fn, seg_batches[:2], criterion=criterion,
            **criterion_kwargs(criterion))
    assert list(scores) == list(params)
    for name, score in scores.items():
        assert score.shape == params[name].shape
        assert not score.requires_grad
        assert torch.isfinite(score).all()
        assert score.abs().sum() > 0, name


@pytest.mark.parametrize('criterion', CRITERIA.names)
@pytest.mark.parametrize('scope', ['global', 'layerwise'])
def test_masks_from_every_criterion_have_exact_sparsity(
        criterion, scope, seg_model, seg_batches, seg_loss_fn):
    sparsity = 0.8
    scores = compute_scores(
        seg_model, seg_loss_fn, seg_batches[:2], criterion=criterion,
        **criterion_kwargs(criterion))
    masks = select_masks(scores, sparsity, selection=scope)
    apply_masks(seg_model, masks)
    params = prunable_parameters(seg_model)
    zeros = {name: int((w == 0).sum()) for name, w in params.items()}
    if scope == 'global':
        total = sum(w.numel() for w in params.values())
        assert sum(zeros.values()) == total - round(0.2 * total)
    else:
        for name, w in params.items():
            assert zeros[name] == w.numel() - round(0.2 * w.numel()), name


def test_unknown_criterion_lists_valid_names(seg_model):
    with pytest.raises(ValueError) as info:
        compute_scores(seg_model, criterion='snap')
    assert "'snap'" in str(info.value)
    for name in CRITERIA.names:
        assert name in str(info.value)


def test_data_criteria_need_loss_and_batches(seg_model, seg_batches):
    with pytest.raises(ValueError, match='loss_fn'):
        compute_scores(seg_model, None, seg_batches, criterion='snip')


def test_data_free_criteria_ignore_loss_and_batches(seg_model):
    scores = compute_scores(seg_model, criterion='magnitude')
    params = prunable_parameters(seg_model)
    for name, w in params.items():
        assert torch.equal(scores[name], w.detach().abs())


def test_params_override_scopes(seg_model):
    params = prunable_parameters(seg_model, scopes='decode_head')
    scores = compute_scores(seg_model, criterion='magnitude', params=params)
    assert list(scores) == ['decode_head.weight']


def test_loss_fn_must_return_a_scalar_tensor(seg_model, seg_batches):

    def dict_loss(model, batch):
        return {'loss_ce': model.loss(batch)}

    with pytest.raises(TypeError, match='scalar tensor'):
        compute_scores(seg_model, dict_loss, seg_batches, criterion='snip')


def test_random_scores_reproducible_with_generator(seg_model):
    params = prunable_parameters(seg_model)
    a = random_scores(params, torch.Generator().manual_seed(3))
    b = random_scores(params, torch.Generator().manual_seed(3))
    c = random_scores(params, torch.Generator().manual_seed(4))
    assert all(torch.equal(a[n], b[n]) for n in params)
    assert not all(torch.equal(a[n], c[n]) for n in params)
    assert all(((s >= 0) & (s < 1)).all() for s in a.values())


def test_magnitude_scores_are_abs_weights():
    layer = nn.Linear(3, 2)
    scores = magnitude_scores({'weight': layer.weight})
    assert torch.equal(scores['weight'], layer.weight.detach().abs())


# ---- exact references on a tiny float64 network --------------------------


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def labelled(inputs):
    return [(x, (x.sum(1) > 0).long()) for x in inputs]


def test_snip_sums_gradients_over_batches(tiny_net, tiny_inputs):
    batches = labelled(tiny_inputs)
    params = prunable_parameters(tiny_net)
    scores = snip_scores(tiny_net, ce_loss, batches, params)
    total = sum(ce_loss(tiny_net, b) for b in batches)
    grads = torch.autograd.grad(total, list(params.values()))
    for (name, w), g in zip(params.items(), grads):
        torch.testing.assert_close(scores[name], (w * g).abs().detach())


def test_grasp_matches_explicit_hessian(tiny_net, tiny_inputs):
    batches = labelled(tiny_inputs)
    params = prunable_parameters(tiny_net)
    w1, w2 = [w.detach() for w in params.values()]
    b1 = tiny_net.backbone[0].bias.detach()
    b2 = tiny_net.backbone[2].bias.detach()
    sizes = (w1.numel(), w2.numel())

    def loss_of(flat, batch):
        v1, v2 = flat.split(sizes)
        x, y = batch
        h = torch.tanh(F.linear(x, v1.view_as(w1), b1))
        return F.cross_entropy(F.linear(h, v2.view_as(w2), b2), y)

    flat = torch.cat([w1.flatten(), w2.flatten()])
    g = sum(torch.func.grad(loss_of)(flat, b) for b in batches)
    hessian = sum(
        torch.autograd.functional.hessian(lambda v: loss_of(v, b), flat)
        for b in batches)
    expected = (flat * (hessian @ g)).split(sizes)

    scores = grasp_scores(tiny_net, ce_loss, batches, params)
    torch.testing.assert_close(scores['backbone.0.weight'].flatten(),
                               expected[0])
    torch.testing.assert_close(scores['backbone.2.weight'].flatten(),
                               expected[1])
    assert (scores['backbone.0.weight'] < 0).any()  # signed scores
