"""The SD methods (plug-ins) on a minimal classifier with SelfDistillMixin,
and a new method registered here only, trained under EPSD."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import Runner
from torch import nn

from epsd_mm.losses import (CrossCorrelationLoss, CSKDLoss, DLBLoss,
                            PSKDLoss, soft_kl_div)
from epsd_mm.models import SelfDistillMixin
from epsd_mm.pruning import get_masks
from epsd_mm.registry import SD_METHODS
from epsd_mm.sd_methods import (CSKD, DLB, PSKD, BaseSDMethod,
                                CrossCorrelation)


class Sample:
    """A data sample carrying a class label."""

    def __init__(self, label):
        self.label = label


class TinyClassifier(SelfDistillMixin, nn.Module):
    """Linear classifier implementing the mixin's four task hooks."""

    def __init__(self, sd=None, num_classes=3):
        super().__init__()
        self.fc = nn.Linear(4, num_classes)
        self.init_self_distill(sd)
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


def test_plain_training_without_sd():
    model = TinyClassifier(None)
    assert model.sd is None
    assert model.sd_enabled is False
    inputs, samples = _batch(0)
    losses = model.loss(inputs, samples)
    assert set(losses) == {'acc', 'loss_ce'}
    assert losses['loss_ce'].item() == pytest.approx(
        F.cross_entropy(model.fc(inputs), model.sd_labels(samples)).item())


@pytest.mark.parametrize('cfg, method_cls, loss_cls', [
    (dict(type='DLB'), DLB, DLBLoss),
    (dict(type='PSKD'), PSKD, PSKDLoss),
    (dict(type='CSKD'), CSKD, CSKDLoss),
    (dict(type='CrossCorrelation'), CrossCorrelation, CrossCorrelationLoss),
])
def test_methods_and_their_default_losses(cfg, method_cls, loss_cls):
    model = TinyClassifier(cfg)
    assert type(model.sd) is method_cls and type(model.sd.loss) is loss_cls
    assert model.sd_enabled


def test_loss_options_merge_over_the_default_loss():
    model = TinyClassifier(dict(type='DLB', loss=dict(temperature=2.0)))
    assert isinstance(model.sd.loss, DLBLoss)
    assert model.sd.loss.temperature == 2.0
    assert model.sd.loss_name == 'loss_dlb'


def test_unknown_method_and_bad_loss_name():
    with pytest.raises(KeyError, match='NoSuchMethod'):
        TinyClassifier(dict(type='NoSuchMethod'))
    with pytest.raises(ValueError, match="start with 'loss'"):
        TinyClassifier(dict(type='DLB', loss=dict(loss_name='dlb')))


def test_dlb_targets_are_the_previous_predictions():
    model = TinyClassifier(dict(type='DLB', loss=dict(temperature=2.0)))
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
    prev = model.sd.get_state()
    assert torch.equal(prev[0], inputs2) and prev[1] == samples2
    assert not prev[2].requires_grad

    model.sd.reset()
    assert model.loss(inputs1, samples1)['loss_dlb'].item() == 0


@pytest.mark.e2e
def test_sd_state_is_not_module_state():
    model = TinyClassifier(dict(type='PSKD'))
    model.sd.before_train(model)  # a teacher snapshot
    assert set(model.state_dict()) == {'fc.weight', 'fc.bias'}
    assert [n for n, _ in model.named_modules()] == ['', 'fc']
    assert len(list(model.parameters())) == 2


def test_snapshot_is_a_frozen_copy():
    model = TinyClassifier(dict(type='PSKD'))
    other = TinyClassifier(None)
    model.sd.teacher = other
    snapshot = model.sd_snapshot()
    # the original keeps its method and state, the copy has none
    assert model.sd.teacher is other
    assert snapshot.sd is None
    assert not snapshot.training
    assert not any(p.requires_grad for p in snapshot.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(snapshot.fc.weight, model.fc.weight)
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    assert not torch.equal(snapshot.fc.weight, model.fc.weight)


def test_pskd_uses_the_teacher_and_progress():
    model = TinyClassifier(dict(type='PSKD'))
    inputs, samples = _batch(3)
    with pytest.raises(RuntimeError, match='teacher'):
        model.loss(inputs, samples)
    teacher = TinyClassifier(None)
    model.sd.teacher = teacher.eval()
    model.sd.before_train_iter(model, 5, 10, epoch_length=100)
    assert model.sd.progress == 0.5
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
    model = TinyClassifier(dict(type='CSKD', loss=dict(temperature=4.0)))
    inputs, samples = _batch(4, n=6)
    for anchor, partner in zip(samples[0::2], samples[1::2]):
        partner.label = anchor.label  # pairs as ClassPairSampler makes them
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
    samples[3].label = (samples[2].label + 1) % 3  # a non-matching partner
    with pytest.raises(ValueError, match='partner of anchor 1'):
        model.loss(inputs, samples)


@pytest.mark.e2e
def test_cskd_refuses_a_loader_that_does_not_pair(tiny_cfg):
    runner = Runner.from_cfg(tiny_cfg({'model.sd': dict(type='CSKD')}))
    method = runner.model.sd
    with pytest.raises(ValueError, match='ClassPairSampler'):
        method.check_train_loader(runner.train_dataloader)


def test_cross_correlation_needs_the_unpruned_view():
    model = TinyClassifier(dict(type='CrossCorrelation'))
    model.sd_features = lambda extra: extra
    with pytest.raises(RuntimeError, match='GradualPruningHook'):
        model.loss(*_batch(0))
    model.sd.set_unpruned(None)  # a provider, nothing pruned yet
    assert model.loss(*_batch(0))['loss_xcorr'].item() == 0


def test_sd_disabled_restores_on_error():
    model = TinyClassifier(dict(type='DLB'))
    with pytest.raises(KeyError):
        with model.sd_disabled():
            assert model.sd_enabled is False
            assert set(model.loss(*_batch(0))) == {'acc', 'loss_ce'}
            raise KeyError('boom')
    assert model.sd_enabled is True
    assert model.sd.get_state() is None


# --------------------------------------------------------------------------
# A new SD method, registered in this test file only
# --------------------------------------------------------------------------
@SD_METHODS.register_module(force=True)
class ConsistencyUnderNoise(BaseSDMethod):
    """Test-only plug-in: the network's own prediction on the clean input
    (detached) teaches its prediction on a noisy copy."""

    default_loss = dict(type='DLBLoss', loss_name='loss_noise')
    calls = []

    def compute(self, model, inputs, data_samples):
        logits, extra = model.sd_forward(inputs)
        losses = model.sd_task_losses(logits, extra, data_samples,
                                      self.keeps_task_loss)
        noisy, _ = model.sd_forward(inputs + 0.1 * torch.randn_like(inputs))
        losses[self.loss_name] = self.loss(
            model.sd_align_logits(noisy, data_samples),
            model.sd_align_logits(logits.detach(), data_samples),
            model.sd_labels(data_samples))
        type(self).calls.append(len(data_samples))
        return losses


@pytest.mark.e2e
def test_new_method_from_a_test_file_trains_under_epsd(tiny_cfg, helpers,
                                                       tmp_path):
    ConsistencyUnderNoise.calls.clear()
    runner = Runner.from_cfg(
        tiny_cfg({'model.sd': dict(_delete_=True,
                                   type='ConsistencyUnderNoise')},
                 max_iters=2))
    runner.train()
    model = runner.model
    assert isinstance(model.sd, ConsistencyUnderNoise)
    # EPSD scored on the new method's loss (2 batches for a 1-step prospr),
    # then 2 training iterations used it
    assert len(ConsistencyUnderNoise.calls) >= 4
    assert get_masks(model)
    log = helpers.read_logs(str(tmp_path))
    assert 'on the sd loss' in log
    line = [l for l in log.splitlines() if 'Iter(train) [2/2]' in l][0]
    value = float(line.split('loss_noise: ')[1].split()[0])
    assert math.isfinite(value) and value > 0
