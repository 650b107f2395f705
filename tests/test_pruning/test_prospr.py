"""Tests of ProsPr, the EPSD criterion."""
from typing import Any, List, Optional

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.structures import SegDataSample
from torch import Tensor

from epsd_mm.pruning import (compute_scores, prospr_scores,
                             prunable_parameters, snip_scores)
from epsd_mm.pruning.criteria import prospr_meta_gradients
from epsd_mm.pruning.criteria.prospr import num_loss_calls


def relative_error(actual: Tensor, expected: Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def assert_paths_equal(model, make_loss, batches, params, **kwargs):
    """The adjoint sweep (default) and the unrolled graph agree to 1e-10
    in float64 and leave the global RNG in the same state.

    Returns the adjoint path's meta-gradients and both paths' loss_fn
    (``make_loss()`` gives a fresh one per path).
    """
    loss_fns = make_loss(), make_loss()
    torch.manual_seed(0)
    efficient = prospr_meta_gradients(model, loss_fns[0], batches, params,
                                      **kwargs)
    after_efficient = torch.rand(3)
    torch.manual_seed(0)
    unrolled = prospr_meta_gradients(
        model, loss_fns[1], batches, params, memory_efficient=False,
        **kwargs)
    torch.testing.assert_close(torch.rand(3), after_efficient)
    assert efficient.keys() == unrolled.keys()
    for name in params:
        assert unrolled[name].dtype == torch.float64
        assert unrolled[name].abs().max() > 0, f'{name} scored all zero'
        assert relative_error(efficient[name], unrolled[name]) <= 1e-10, name
    return efficient, loss_fns


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
    scores = compute_scores(model, seg_loss_fn, seg_batches[:2], num_steps=1)
    assert not model.backbone.stem[0].weight.requires_grad
    assert scores['backbone.stem.0.weight'].sum() > 0


def test_loss_fn_called_in_order_with_cycled_batches(seg_model, seg_batches):
    seen = []

    def recording_loss(model, batch):
        seen.append(next(i for i, b in enumerate(seg_batches) if b is batch))
        return model.loss(batch)

    params = prunable_parameters(seg_model)
    prospr_scores(seg_model, recording_loss, seg_batches[:2], params,
                  num_steps=3, memory_efficient=False)
    assert seen == [0, 1, 0, 1]
    seen.clear()
    # first sweep, then backwards: step 2 recomputed from its kept
    # parameters, step 1 after replaying step 0, then step 0
    prospr_scores(seg_model, recording_loss, seg_batches[:2], params,
                  num_steps=3)
    assert seen == [0, 1, 0, 1] + [0] + [0] + [1] + [0]


@pytest.mark.parametrize('memory_efficient, first_order',
                         [(True, False), (True, True), (False, False)])
def test_progress_counts_every_loss_call(seg_model, seg_batches,
                                         memory_efficient, first_order):
    """One report per ``loss_fn`` call; the last one says 'all done'."""
    calls, reports = [], []

    def counting_loss(model, batch):
        calls.append(batch)
        return model.loss(batch)

    batches = seg_batches[:2] * 4  # 2 micro-batches per loss evaluation
    prospr_scores(seg_model, counting_loss, batches,
                  prunable_parameters(seg_model), num_steps=3,
                  first_order=first_order,
                  memory_efficient=memory_efficient,
                  progress=lambda message, f: reports.append((message, f)))
    total = num_loss_calls(2, 3, first_order, memory_efficient)
    assert total == (2 * 4 if first_order or not memory_efficient
                     else 2 * (2 * 3 + 1 + 1))
    assert len(calls) == total
    assert [f for _, f in reports] == [i / total
                                       for i in range(1, total + 1)]
    messages = [m for m, _ in reports]
    assert all(m.endswith(f'(loss evaluation {i}/{total})')
               for i, m in enumerate(messages, 1))
    assert messages[0].startswith('inner step 1/3, batch 1/2')
    assert messages[5].startswith('inner step 3/3, batch 2/2')
    assert messages[6].startswith('final loss, batch 1/2')
    if memory_efficient and not first_order:
        assert messages[8].startswith('back through step 3/3')
        assert messages[10].startswith('replay step 1/3')
        assert messages[-1].startswith('back through step 1/3, batch 2/2')


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
    with pytest.raises(ValueError, match='needs `batches`, got none'):
        compute_scores(seg_model, seg_loss_fn, [])


def test_surplus_batches_rejected(seg_model, seg_batches, seg_loss_fn):
    """5 batches for 4 loss evaluations: one would be drawn and unused."""
    with pytest.raises(ValueError, match=r'\(1 surplus\).*multiple of 4 '
                       r'\(e\.g\. 4 or 8\)'):
        prospr_scores(seg_model, seg_loss_fn, seg_batches + seg_batches[:2],
                      prunable_parameters(seg_model), num_steps=3)


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


@pytest.mark.parametrize('memory_efficient', [True, False])
@pytest.mark.parametrize('momentum', [0.0, 0.9])
def test_meta_gradient_matches_finite_differences(momentum, memory_efficient,
                                                  tiny_net, tiny_inputs):
    model, batches = tiny_net, regression(tiny_inputs)
    params = prunable_parameters(model)
    num_steps, lr = 3, 0.5
    scores = prospr_scores(model, mse_loss, batches, params,
                           num_steps=num_steps, lr=lr, momentum=momentum,
                           memory_efficient=memory_efficient)
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


@pytest.mark.parametrize('memory_efficient', [True, False])
def test_first_order_is_snip_at_the_stepped_weights(memory_efficient,
                                                    tiny_net, tiny_inputs):
    model, batches = tiny_net, regression(tiny_inputs)
    params = prunable_parameters(model)
    scores = prospr_scores(model, mse_loss, batches, params, num_steps=3,
                           lr=0.5, momentum=0.9, first_order=True,
                           memory_efficient=memory_efficient)
    theta = [p.detach() for p in model.parameters()]
    stepped, _ = unrolled_loss(theta, batches, 3, 0.5, 0.9)
    stepped = [t.requires_grad_(True) for t in stepped]
    grads = torch.autograd.grad(functional_loss(stepped, batches[1]),
                                stepped)
    torch.testing.assert_close(scores['backbone.0.weight'],
                               (theta[0] * grads[0]).abs())
    torch.testing.assert_close(scores['backbone.2.weight'],
                               (theta[2] * grads[2]).abs())


# ---- memory-efficient (adjoint) path == unrolled path, float64 ------------


@pytest.mark.parametrize('momentum', [0.0, 0.9])
def test_adjoint_equals_unrolled_on_toy_net(momentum, tiny_net,
                                            tiny_inputs):
    """Every parameter masked (biases too), one of them frozen: the frozen
    one is not stepped but gets the mixed second-derivative terms."""
    model = tiny_net
    model.backbone[0].bias.requires_grad_(False)
    params = dict(model.named_parameters())
    assert_paths_equal(model, lambda: mse_loss, regression(tiny_inputs),
                       params,
                       num_steps=3, lr=0.5, momentum=momentum)


def tiny_deeplabv3(frozen_stages: int = -1) -> EncoderDecoder:
    """mmseg DeepLabV3 (ResNetV1c-18 at 4 base channels, ASPP head and FCN
    auxiliary head, both with dropout), float64, train mode."""
    norm_cfg = dict(type='BN', requires_grad=True)
    head = dict(
        num_classes=3,
        norm_cfg=norm_cfg,
        dropout_ratio=0.3,
        align_corners=False)
    backbone = dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=4,
        base_channels=4,
        out_indices=(2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        frozen_stages=frozen_stages,
        norm_cfg=norm_cfg)
    decode_head = dict(
        type='ASPPHead',
        in_channels=32,
        in_index=1,
        channels=4,
        dilations=(1, 2),
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0),
        **head)
    auxiliary_head = dict(
        type='FCNHead',
        in_channels=16,
        in_index=0,
        channels=4,
        num_convs=1,
        concat_input=False,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4),
        **head)
    torch.manual_seed(0)
    # sub-module types are looked up in mmseg, whatever default scope
    # earlier tests (runners) left behind
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = EncoderDecoder(
            backbone=backbone,
            decode_head=decode_head,
            auxiliary_head=auxiliary_head)
    return model.double().train()


def seg_data(num_batches: int, size: int = 16) -> List[dict]:
    """Batches as an mmseg data preprocessor returns them (float64)."""
    gen = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(num_batches):
        samples = []
        for _ in range(2):
            sample = SegDataSample(
                metainfo=dict(img_shape=(size, size), pad_shape=(size,
                                                                 size)))
            sample.gt_sem_seg = PixelData(
                data=torch.randint(0, 3, (1, size, size), generator=gen))
            samples.append(sample)
        inputs = torch.randn(2, 3, size, size, generator=gen,
                             dtype=torch.float64)
        batches.append(dict(inputs=inputs, data_samples=samples))
    return batches


def mm_loss(model: nn.Module, batch: dict) -> Tensor:
    """The scoring loss of an MMEngine model (as the pruning hook's)."""
    return model.parse_losses(model(**batch, mode='loss'))[0]


@pytest.mark.parametrize('momentum', [0.0, 0.9])
def test_adjoint_equals_unrolled_on_deeplabv3(momentum):
    """Real mmseg model with dropout (the recompute replays the RNG) and a
    frozen stem whose masked weights are scored too."""
    model = tiny_deeplabv3(frozen_stages=0)
    params = prunable_parameters(model)
    assert not params['backbone.stem.0.weight'].requires_grad
    batches = seg_data(3)
    assert_paths_equal(model, lambda: mm_loss, batches, params, num_steps=2,
                       lr=0.1, momentum=momentum)
    # the dropout masks matter: another seed gives other meta-gradients
    torch.manual_seed(0)
    seed0 = prospr_meta_gradients(model, mm_loss, batches, params, 2)
    torch.manual_seed(1)
    seed1 = prospr_meta_gradients(model, mm_loss, batches, params, 2)
    name = 'backbone.layer4.1.conv2.weight'
    assert relative_error(seed1[name], seed0[name]) > 1e-3


class DLBLikeLoss:
    """Stateful scoring loss: CE plus KL to the previous call's detached
    predictions (DLB's soft targets), with the get_state/set_state contract.
    """

    def __init__(self) -> None:
        self.previous: Optional[Tensor] = None
        self.calls = 0

    def __call__(self, model: nn.Module, batch: dict) -> Tensor:
        self.calls += 1
        logits = model(batch['inputs'], mode='tensor')
        loss = mm_loss(model, batch)
        if self.previous is not None:
            loss = loss + F.kl_div(
                F.log_softmax(logits, 1),
                F.softmax(self.previous, 1),
                reduction='batchmean')
        self.previous = logits.detach()
        return loss

    def get_state(self) -> Any:
        return self.previous

    def set_state(self, state: Any) -> None:
        self.previous = state


def test_adjoint_replays_a_stateful_loss():
    model = tiny_deeplabv3()
    params = prunable_parameters(model)
    batches = seg_data(1)  # the same images at every step, as in DLB
    efficient, (replayed, reference) = assert_paths_equal(
        model, DLBLikeLoss, batches, params, num_steps=2, lr=0.1)
    # the state is left as after the last forward call, as by the reference
    assert reference.calls == 3 and replayed.calls == 3 + 1 + 1
    torch.testing.assert_close(replayed.previous, reference.previous)
    # the same loss without the contract would be recomputed with the
    # wrong state: refused (test_stateful_closure_loss_refused)
    hidden = DLBLikeLoss()
    with pytest.raises(ValueError, match='get_state'):
        prospr_meta_gradients(model, lambda m, b: hidden(m, b), batches,
                              params, 2)


class SmallCNN(nn.Module):
    """Two convolutions and a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x))


def closure_stateful_loss():
    """CE plus KL to the previous call's predictions, kept in a closure
    (DLB-style, the natural way to write it: no get_state/set_state)."""
    previous: List[Tensor] = []

    def loss_fn(model: nn.Module, batch) -> Tensor:
        inputs, targets = batch
        logits = model(inputs)
        loss = F.cross_entropy(logits, targets)
        if previous:
            loss = loss + F.kl_div(
                F.log_softmax(logits, 1),
                F.softmax(previous[-1], 1),
                reduction='batchmean')
        previous[:] = [logits.detach()]
        return loss

    return loss_fn


def cnn_batches(num: int = 1) -> List[tuple]:
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(4, 3, 8, 8, generator=gen),
             torch.randint(0, 3, (4, ), generator=gen)) for _ in range(num)]


@pytest.mark.parametrize('num_steps', [2, 3])
def test_stateful_closure_loss_refused(num_steps):
    """The default adjoint sweep repeats loss_fn calls; a loss whose state
    lives in a closure gives another value on the repeat: refused, naming
    the step, both values and both fixes."""
    model = SmallCNN()
    params = prunable_parameters(model)
    with pytest.raises(ValueError) as info:
        prospr_scores(model, closure_stateful_loss(), cnn_batches(), params,
                      num_steps=num_steps)
    message = str(info.value)
    assert f'inner step {num_steps}/{num_steps}' in message
    assert 'the first time' in message
    assert 'get_state() and set_state(state)' in message
    assert 'memory_efficient=False' in message
    # the unrolled path calls it once per step: scores as defined
    scores = prospr_scores(model, closure_stateful_loss(), cnn_batches(),
                           params, num_steps=num_steps,
                           memory_efficient=False)
    assert all(scores[n].abs().sum() > 0 for n in params)


def test_stateless_loss_on_small_cnn_not_refused():
    model = SmallCNN()
    params = prunable_parameters(model)

    def loss_fn(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    efficient = prospr_meta_gradients(model, loss_fn, cnn_batches(3),
                                      params, num_steps=3)
    unrolled = prospr_meta_gradients(model, loss_fn, cnn_batches(3), params,
                                     num_steps=3, memory_efficient=False)
    for name in params:
        torch.testing.assert_close(efficient[name], unrolled[name])


def test_loss_fn_with_half_of_the_state_contract_rejected(seg_model,
                                                          seg_batches):

    class HalfStateful:

        def __call__(self, model, batch):
            return model.loss(batch)

        def get_state(self):
            return None

    with pytest.raises(TypeError, match='get_state/set_state'):
        prospr_scores(seg_model, HalfStateful(), seg_batches,
                      prunable_parameters(seg_model))


# ---- micro-batches: each loss evaluation averages over a group ------------


@pytest.mark.parametrize('memory_efficient', [True, False])
@pytest.mark.parametrize('momentum', [0.0, 0.9])
def test_micro_batch_groups_equal_concatenated_batches(momentum,
                                                       memory_efficient,
                                                       tiny_net):
    """Without BatchNorm, averaging over micro-batches is the loss on the
    concatenated batch."""
    gen = torch.Generator().manual_seed(3)
    micro = regression([
        torch.randn(3, 3, generator=gen, dtype=torch.float64)
        for _ in range(6)
    ])
    whole = [(torch.cat([x for x, _ in micro[k:k + 2]]),
              torch.cat([y for _, y in micro[k:k + 2]]))
             for k in range(0, 6, 2)]
    params = prunable_parameters(tiny_net)
    kwargs = dict(num_steps=2, lr=0.5, momentum=momentum,
                  memory_efficient=memory_efficient)
    grouped = prospr_meta_gradients(tiny_net, mse_loss, micro, params,
                                    **kwargs)
    concatenated = prospr_meta_gradients(tiny_net, mse_loss, whole, params,
                                         **kwargs)
    for name in params:
        assert relative_error(grouped[name], concatenated[name]) <= 1e-10
    # and the micro-batches do matter (not just the first of each group)
    first_only = prospr_meta_gradients(tiny_net, mse_loss, micro[::2],
                                       params, **kwargs)
    assert relative_error(first_only[name], concatenated[name]) > 1e-3
