"""Tests of applying, enforcing, saving and removing masks."""
import copy

import pytest
import torch

from epsd_mm.pruning import (apply_masks, attach_mask_buffers,
                             enforce_masks, get_masks, masked_param_names,
                             prunable_parameters, random_scores,
                             register_mask_enforcement, remove_masks,
                             select_masks)


def half_masks(model, seed=0):
    params = prunable_parameters(model)
    return select_masks(
        random_scores(params, torch.Generator().manual_seed(seed)), 0.5)


def backward(model, batch):
    model.zero_grad()
    model.loss(batch).backward()


def test_masks_are_bool_buffers_in_state_dict(seg_model):
    masks = half_masks(seg_model)
    before = {n: w.detach().clone()
              for n, w in prunable_parameters(seg_model).items()}
    apply_masks(seg_model, masks)
    state = seg_model.state_dict()
    for name, mask in masks.items():
        buffer = state[f'{name}_epsd_mask']
        assert buffer.dtype == torch.bool and torch.equal(buffer, mask)
        weight = state[name]
        assert (weight[~mask] == 0).all()
        assert torch.equal(weight[mask], before[name][mask])
    assert 'backbone.layer1.0.conv1.weight_epsd_mask' in state
    assert get_masks(seg_model).keys() == masks.keys()


def test_gradients_of_pruned_weights_are_zero(seg_model, seg_batches):
    masks = half_masks(seg_model)
    apply_masks(seg_model, masks)
    backward(seg_model, seg_batches[0])
    for name, param in prunable_parameters(seg_model).items():
        assert (param.grad[~masks[name]] == 0).all(), name
        assert (param.grad[masks[name]] != 0).any(), name


def train(model, optimizer, batches, steps):
    for step in range(steps):
        optimizer.zero_grad()
        model.loss(batches[step % len(batches)]).backward()
        optimizer.step()


OPTIMIZERS = {
    'sgd': lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    'adamw': lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize('optimizer_name', sorted(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero_through_training(
        optimizer_name, seg_model, seg_batches):
    optimizer = OPTIMIZERS[optimizer_name](seg_model.parameters())
    train(seg_model, optimizer, seg_batches, 2)  # momentum/Adam state
    masks = half_masks(seg_model)
    apply_masks(seg_model, masks)
    register_mask_enforcement(optimizer, seg_model)
    kept_before = {n: w.detach()[masks[n]].clone()
                   for n, w in prunable_parameters(seg_model).items()}
    train(seg_model, optimizer, seg_batches, 20)
    for name, w in prunable_parameters(seg_model).items():
        assert (w[~masks[name]] == 0).all(), name
        assert not torch.equal(w.detach()[masks[name]], kept_before[name])


@pytest.mark.parametrize('optimizer_name', sorted(OPTIMIZERS))
def test_without_enforcement_optimizer_state_revives_weights(
        optimizer_name, seg_model, seg_batches):
    optimizer = OPTIMIZERS[optimizer_name](seg_model.parameters())
    train(seg_model, optimizer, seg_batches, 2)
    masks = half_masks(seg_model)
    apply_masks(seg_model, masks)
    train(seg_model, optimizer, seg_batches, 3)
    revived = sum(int((w[~masks[n]] != 0).sum())
                  for n, w in prunable_parameters(seg_model).items())
    assert revived > 0


def test_enforcement_handle_can_be_removed(seg_model, seg_batches):
    optimizer = torch.optim.SGD(seg_model.parameters(), lr=0.1)
    apply_masks(seg_model, half_masks(seg_model))
    handle = register_mask_enforcement(optimizer, seg_model)
    handle.remove()
    name = 'backbone.layer1.0.conv1.weight'
    weight = dict(seg_model.named_parameters())[name]
    mask = get_masks(seg_model)[name]
    with torch.no_grad():
        weight[~mask] = 1.0
    train(seg_model, optimizer, seg_batches, 1)
    assert (weight[~mask] != 0).all()
    enforce_masks(seg_model)
    assert (weight[~mask] == 0).all()


def test_register_mask_enforcement_needs_a_torch_optimizer(seg_model):
    with pytest.raises(TypeError, match='optim_wrapper.optimizer'):
        register_mask_enforcement(object(), seg_model)


def test_reapplying_replaces_masks_without_stacking_hooks(
        seg_model, seg_batches):
    first, second = half_masks(seg_model, 0), half_masks(seg_model, 1)
    apply_masks(seg_model, first)
    apply_masks(seg_model, second)
    params = prunable_parameters(seg_model)
    for name, param in params.items():
        assert len(param._backward_hooks) == 1, name
        assert torch.equal(get_masks(seg_model)[name], second[name])
    backward(seg_model, seg_batches[0])
    for name, param in params.items():
        assert (param.grad[~second[name]] == 0).all()
        # still pruned by `first` as weights, but its mask no longer applies
        assert (param.grad[second[name] & ~first[name]] != 0).any()


def test_checkpoint_round_trip_into_fresh_model(make_seg_model,
                                                seg_batches):
    model = make_seg_model(seed=0)
    masks = half_masks(model)
    apply_masks(model, masks)
    state = model.state_dict()

    fresh = make_seg_model(seed=1)
    with pytest.raises(RuntimeError, match='weight_epsd_mask'):
        fresh.load_state_dict(state)
    names = masked_param_names(state)
    assert sorted(names) == sorted(masks)
    attach_mask_buffers(fresh, names)
    fresh.load_state_dict(state)
    loaded = get_masks(fresh)
    assert loaded.keys() == masks.keys()
    assert all(torch.equal(loaded[n], masks[n]) for n in masks)
    backward(fresh, seg_batches[0])
    for name, param in prunable_parameters(fresh).items():
        assert (param.grad[~masks[name]] == 0).all()


def test_remove_masks_drops_buffers_and_hooks(seg_model, seg_batches):
    masks = half_masks(seg_model)
    apply_masks(seg_model, masks)
    remove_masks(seg_model)
    assert get_masks(seg_model) == {}
    assert not any(k.endswith('_epsd_mask') for k in seg_model.state_dict())
    backward(seg_model, seg_batches[0])
    for name, param in prunable_parameters(seg_model).items():
        assert (param.detach()[~masks[name]] == 0).all()  # weights kept
        assert (param.grad[~masks[name]] != 0).any()  # no more masking
        assert len(param._backward_hooks) == 0


def test_masks_survive_dtype_conversion_and_deepcopy(seg_model,
                                                     seg_batches):
    masks = half_masks(seg_model)
    apply_masks(seg_model, masks)
    seg_model.double()
    assert all(m.dtype == torch.bool for m in get_masks(seg_model).values())
    img, seg = seg_batches[0]
    backward(seg_model, (img.double(), seg))
    for name, param in prunable_parameters(seg_model).items():
        assert (param.grad[~masks[name]] == 0).all()
    clone = copy.deepcopy(seg_model)
    copied = get_masks(clone)
    assert all(torch.equal(copied[n], masks[n]) for n in masks)


def test_frozen_weights_can_be_masked(make_seg_model):
    model = make_seg_model(frozen_stages=1)
    masks = half_masks(model)
    apply_masks(model, masks)
    stem = model.backbone.stem[0].weight
    assert not stem.requires_grad
    assert (stem[~masks['backbone.stem.0.weight']] == 0).all()


def test_invalid_masks_rejected(seg_model):
    with pytest.raises(ValueError, match='not a parameter'):
        apply_masks(seg_model, {'backbone.nope.weight': torch.ones(1)})
    with pytest.raises(ValueError, match='shape'):
        apply_masks(seg_model,
                    {'decode_head.weight': torch.ones(3, dtype=torch.bool)})
    assert get_masks(seg_model) == {}
