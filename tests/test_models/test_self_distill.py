"""SelfDistillMixin on a minimal classifier: the SD logic alone."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from epsd_mm.losses import (CrossCorrelationLoss, CSKDLoss, DLBLoss,
                            PSKDLoss, soft_kl_div)
from epsd_mm.models import SelfDistillMixin


class Sample:
    """A data sample carrying a class label."""

    def __init__(self, label):
        self.label = label


class TinyClassifier(SelfDistillMixin, nn.Module):
    """Linear classifier implementing the mixin's four task hooks."""

    def __init__(self, sd_loss=None, num_classes=3):
        super().__init__()
        self.fc = nn.Linear(4, num_classes)
        self.init_self_distill(sd_loss)
        self.forward_inputs = []

    def loss(self, inputs, data_samples):
        return self.self_distill_loss(inputs, data_samples)

    def sd_forward(self, inputs):
        self.forward_inputs.append(inputs)
        return self.fc(inputs), None

    def sd_task_losses(self, logits, extra, data_samples, with_main_ce):
        losses = {'acc': (logits.argmax(1) == self.sd_labels(data_samples)
                          ).float().mean()}
        if with_main_ce:
            losses['loss_ce'] = F.cross_entropy(logits,
                                                self.sd_labels(data_samples))
        return losses

    def sd_labels(self, data_samples):
        return torch.tensor([s.label for s in data_samples])


def _batch(seed, n=4):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 4, generator=g)
    labels = torch.randint(0, 3, (n, ), generator=g).tolist()
    return inputs, [Sample(label) for label in labels]


def test_plain_training_without_sd_loss():
    model = TinyClassifier(None)
    assert model.sd_loss is None and model.sd_method is None
    assert model.sd_enabled is False
    inputs, samples = _batch(0)
    losses = model.loss(inputs, samples)
    assert set(losses) == {'acc', 'loss_ce'}
    assert losses['loss_ce'].item() == pytest.approx(
        F.cross_entropy(model.fc(inputs), model.sd_labels(samples)).item())


@pytest.mark.parametrize('cfg, cls, method', [
    (dict(type='DLBLoss'), DLBLoss, 'dlb'),
    (dict(type='PSKDLoss'), PSKDLoss, 'pskd'),
    (dict(type='CSKDLoss'), CSKDLoss, 'cskd'),
])
def test_sd_loss_types(cfg, cls, method):
    model = TinyClassifier(cfg)
    assert type(model.sd_loss) is cls
    assert model.sd_method == method and model.sd_enabled


def test_other_losses_are_rejected():
    with pytest.raises(TypeError, match='sd_loss must be one of'):
        TinyClassifier(dict(type='mmseg.CrossEntropyLoss'))
    model = TinyClassifier(dict(type='CrossCorrelationLoss'))
    assert isinstance(model.sd_loss, CrossCorrelationLoss)
    assert model.sd_method == 'xcorr'


def test_dlb_targets_are_the_previous_predictions():
    model = TinyClassifier(dict(type='DLBLoss', temperature=2.0))
    inputs1, samples1 = _batch(1)
    inputs2, samples2 = _batch(2)
    losses1 = model.loss(inputs1, samples1)
    logits1 = model.fc(inputs1).detach()
    assert losses1['loss_dlb'].item() == 0
    assert losses1['loss_dlb'].requires_grad  # same keys, part of graph

    with torch.no_grad():
        # "a training step" (a class-dependent change of the logits)
        model.fc.weight.add_(torch.randn(3, 4, generator=torch.Generator(
        ).manual_seed(9)))
    losses2 = model.loss(inputs2, samples2)
    forward = model.forward_inputs[-1]
    assert torch.equal(forward, torch.cat([inputs2, inputs1]))
    logits_now = model.fc(forward)
    # soft_kl_div includes the T^2 factor
    expected = soft_kl_div(logits_now[4:], logits1, temperature=2.0)
    p = torch.softmax(logits1 / 2.0, 1)
    manual = 4.0 * (p * (p.log() - torch.log_softmax(
        logits_now[4:] / 2.0, 1))).sum(1).mean()
    assert expected.item() == pytest.approx(manual.item(), rel=1e-5)
    assert expected.item() > 1e-3
    assert losses2['loss_dlb'].item() == pytest.approx(expected.item(),
                                                       rel=1e-6)
    # task loss over both halves
    assert losses2['loss_ce'].item() == pytest.approx(
        F.cross_entropy(logits_now,
                        model.sd_labels(samples2 + samples1)).item(),
        rel=1e-6)
    # gradient flows into the current predictions only
    grad, = torch.autograd.grad(losses2['loss_dlb'], [model.fc.weight])
    assert grad.abs().sum() > 0
    prev = model.__dict__['_dlb_prev']
    assert torch.equal(prev[0], inputs2) and prev[1] == samples2
    assert not prev[2].requires_grad

    model.reset_sd_state()
    assert model.loss(inputs1, samples1)['loss_dlb'].item() == 0


def test_sd_state_is_not_module_state():
    model = TinyClassifier(dict(type='DLBLoss'))
    model.loss(*_batch(0))
    teacher = TinyClassifier(dict(type='PSKDLoss'))
    model.set_sd_teacher(teacher)
    assert set(model.state_dict()) == {'fc.weight', 'fc.bias'}
    assert [n for n, _ in model.named_modules()] == ['', 'fc', 'sd_loss']
    assert len(list(model.parameters())) == 2


def test_snapshot_is_a_frozen_copy():
    model = TinyClassifier(dict(type='PSKDLoss'))
    model.loss  # noqa: B018
    other = TinyClassifier(None)
    model.set_sd_teacher(other)
    model.__dict__['_dlb_prev'] = ('x', [], 'y')
    snapshot = model.sd_snapshot()
    # the original keeps its state, the copy has none
    assert model.sd_teacher is other
    assert model.__dict__['_dlb_prev'] == ('x', [], 'y')
    assert snapshot.sd_teacher is None
    assert snapshot.__dict__['_dlb_prev'] is None
    assert not snapshot.training
    assert not any(p.requires_grad for p in snapshot.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(snapshot.fc.weight, model.fc.weight)
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    assert not torch.equal(snapshot.fc.weight, model.fc.weight)


def test_pskd_uses_the_teacher_and_progress():
    model = TinyClassifier(dict(type='PSKDLoss', alpha_T=0.8))
    inputs, samples = _batch(3)
    with pytest.raises(RuntimeError, match='teacher'):
        model.loss(inputs, samples)
    teacher = TinyClassifier(None)
    model.set_sd_teacher(teacher.eval())
    model.sd_progress = 0.5
    losses = model.loss(inputs, samples)
    assert set(losses) == {'acc', 'loss_pskd'}  # CE replaced
    labels = model.sd_labels(samples)
    q = 0.6 * F.one_hot(labels, 3) + 0.4 * torch.softmax(
        teacher.fc(inputs), 1)
    log_p = torch.log_softmax(model.fc(inputs), 1)
    expected = (q * (q.log() - log_p)).sum(1).mean()
    assert losses['loss_pskd'].item() == pytest.approx(expected.item(),
                                                       rel=1e-5)


def test_cskd_pairs():
    model = TinyClassifier(dict(type='CSKDLoss', temperature=4.0))
    inputs, samples = _batch(4, n=6)
    losses = model.loss(inputs, samples)
    assert set(losses) == {'acc', 'loss_ce', 'loss_cskd'}
    anchors, partners = model.forward_inputs[-2:]
    assert torch.equal(anchors, inputs[0::2])
    assert torch.equal(partners, inputs[1::2])
    assert losses['loss_ce'].item() == pytest.approx(
        F.cross_entropy(model.fc(inputs[0::2]),
                        model.sd_labels(samples[0::2])).item(),
        rel=1e-6)
    expected = soft_kl_div(
        model.fc(inputs[0::2]), model.fc(inputs[1::2]), temperature=4.0)
    assert losses['loss_cskd'].item() == pytest.approx(expected.item(),
                                                       rel=1e-5)
    with pytest.raises(ValueError, match='even batch size'):
        model.loss(inputs[:5], samples[:5])


def test_sd_disabled_restores_on_error():
    model = TinyClassifier(dict(type='DLBLoss'))
    with pytest.raises(KeyError):
        with model.sd_disabled():
            assert model.sd_enabled is False
            assert set(model.loss(*_batch(0))) == {'acc', 'loss_ce'}
            raise KeyError('boom')
    assert model.sd_enabled is True
    assert model.__dict__['_dlb_prev'] is None
