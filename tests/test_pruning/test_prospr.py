"""Tests of ProsPr, the EPSD criterion."""
import pytest
import torch
import torch.nn.functional as F

from epsd_mm.pruning import (compute_scores, prospr_scores,
                             prunable_parameters, snip_scores)


def test_zero_steps_equals_snip(seg_model, seg_batches, seg_loss_fn):
    params = prunable_parameters(seg_model)
    batch = seg_batches[:1]
    prospr = prospr_scores(
        seg_model, seg_loss_fn, batch, params, num_steps=0)
    snip = snip_scores(seg_model, seg_loss_fn, batch, params)
    for name in params:
        torch.testing.assert_close(
            prospr[name], snip[name], rtol=1e-4, atol=1e-9)


def test_meta_gradient_flows_and_model_is_unchanged(seg_model, seg_batches,
                                                    seg_loss_fn,
                                                    assert_unchanged):
    with assert_unchanged(seg_model):
        full = compute_scores(
            seg_model, seg_loss_fn, seg_batches, num_steps=2)
        first = compute_scores(
            seg_model, seg_loss_fn, seg_batches, num_steps=2,
            first_order=True)
    differences = [
        (full[name] - first[name]).abs().max() / full[name].abs().max()
        for name in full
    ]
    assert max(differences) > 1e-3
    snip = compute_scores(
        seg_model, seg_loss_fn, seg_batches[2:], criterion='snip')
    assert any(not torch.allclose(full[n], snip[n]) for n in full)


def test_frozen_weights_are_scored(make_seg_model, seg_batches, seg_loss_fn):
    model = make_seg_model(frozen_stages=1)
    scores = compute_scores(model, seg_loss_fn, seg_batches, num_steps=1)
    assert not model.backbone.stem[0].weight.requires_grad
    assert scores['backbone.stem.0.weight'].sum() > 0


def test_loss_fn_called_in_order_with_cycled_batches(seg_model, seg_batches):
    seen = []

    def recording_loss(model, batch):
        seen.append(next(i for i, b in enumerate(seg_batches) if b is batch))
        return model.loss(batch)

    prospr_scores(seg_model, recording_loss, seg_batches[:2],
                  prunable_parameters(seg_model), num_steps=3)
    assert seen == [0, 1, 0, 1]


def test_stateful_loss_sees_previous_inner_step(seg_model, seg_batches):
    """A DLB-like loss keeping the previous call's detached predictions."""
    previous = []

    def dlb_like_loss(model, batch):
        logits = model(batch[0])
        loss = F.cross_entropy(logits, batch[1])
        if previous:
            loss = loss + F.kl_div(
                F.log_softmax(logits, 1),
                F.softmax(previous[-1], 1),
                reduction='batchmean')
        previous.append(logits.detach())
        return loss

    shared = [seg_batches[0]]  # the same images at every step
    scores = prospr_scores(seg_model, dlb_like_loss, shared,
                           prunable_parameters(seg_model), num_steps=2)
    assert len(previous) == 3
    # the inner steps changed the predictions the next call distils from
    assert not torch.allclose(previous[0], previous[1])
    assert all(torch.isfinite(s).all() for s in scores.values())


def test_negative_steps_rejected(seg_model, seg_batches, seg_loss_fn):
    with pytest.raises(ValueError, match='num_steps'):
        prospr_scores(seg_model, seg_loss_fn, seg_batches,
                      prunable_parameters(seg_model), num_steps=-1)


def test_params_must_belong_to_the_model(seg_model, seg_batches,
                                         seg_loss_fn):
    with pytest.raises(ValueError, match='backbone.missing.weight'):
        prospr_scores(seg_model, seg_loss_fn, seg_batches,
                      {'backbone.missing.weight': torch.ones(1)})


def test_empty_batches_rejected(seg_model, seg_loss_fn):
    with pytest.raises(ValueError, match='batches is empty'):
        compute_scores(seg_model, seg_loss_fn, [])


# ---- exact meta-gradient on a tiny float64 network ------------------------


def mse_loss(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


def regression(inputs):
    return [(x, torch.stack([x.sum(1), x[:, 0] * x[:, 1]], 1))
            for x in inputs]


def functional_loss(theta, batch):
    w1, b1, w2, b2 = theta
    x, y = batch
    return F.mse_loss(F.linear(torch.tanh(F.linear(x, w1, b1)), w2, b2), y)


def unrolled_loss(theta, batches, num_steps, lr, momentum):
    """Final loss after plain SGD steps on all four tensors (no graph)."""
    velocity = [None] * 4
    for step in range(num_steps):
        theta = [t.detach().requires_grad_(True) for t in theta]
        grads = torch.autograd.grad(
            functional_loss(theta, batches[step % len(batches)]), theta)
        new = []
        for i, (t, g) in enumerate(zip(theta, grads)):
            if velocity[i] is not None:
                g = momentum * velocity[i] + g
            velocity[i] = g
            new.append((t - lr * g).detach())
        theta = new
    return theta, functional_loss(theta,
                                  batches[num_steps % len(batches)])


@pytest.mark.parametrize('momentum', [0.0, 0.9])
def test_meta_gradient_matches_finite_differences(momentum, tiny_net,
                                                  tiny_inputs):
    model, batches = tiny_net, regression(tiny_inputs)
    params = prunable_parameters(model)
    num_steps, lr = 3, 0.5
    scores = prospr_scores(model, mse_loss, batches, params,
                           num_steps=num_steps, lr=lr, momentum=momentum)
    w1, b1, w2, b2 = [p.detach() for p in model.parameters()]

    def loss_with_masks(m1, m2):
        return unrolled_loss([w1 * m1, b1, w2 * m2, b2], batches, num_steps,
                             lr, momentum)[1].item()

    eps = 1e-6
    for index, (name, w) in enumerate(params.items()):
        expected = torch.zeros_like(w)
        for j in range(w.numel()):
            masks = [torch.ones_like(w1), torch.ones_like(w2)]
            masks[index].view(-1)[j] += eps
            up = loss_with_masks(*masks)
            masks[index].view(-1)[j] -= 2 * eps
            down = loss_with_masks(*masks)
            expected.view(-1)[j] = (up - down) / (2 * eps)
        torch.testing.assert_close(
            scores[name], expected.abs(), rtol=1e-5, atol=1e-9)


def test_first_order_is_snip_at_the_stepped_weights(tiny_net, tiny_inputs):
    model, batches = tiny_net, regression(tiny_inputs)
    params = prunable_parameters(model)
    scores = prospr_scores(model, mse_loss, batches, params, num_steps=3,
                           lr=0.5, momentum=0.9, first_order=True)
    theta = [p.detach() for p in model.parameters()]
    stepped, _ = unrolled_loss(theta, batches, 3, 0.5, 0.9)
    stepped = [t.requires_grad_(True) for t in stepped]
    grads = torch.autograd.grad(functional_loss(stepped, batches[1]),
                                stepped)
    torch.testing.assert_close(scores['backbone.0.weight'],
                               (theta[0] * grads[0]).abs())
    torch.testing.assert_close(scores['backbone.2.weight'],
                               (theta[2] * grads[2]).abs())
