"""SelfDistillSegmentor: mmseg segmentors with DLB / PS-KD / CS-KD, on the
real demo data, pipeline and data preprocessor."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder

from epsd_mm.losses import CSKDLoss, DLBLoss, PSKDLoss
from epsd_mm.models import SelfDistillSegmentorMixin
from epsd_mm.pruning import get_masks, prunable_parameters
from epsd_mm.registry import MODELS
from epsd_mm.sd_methods import CSKD, DLB, PSKD

TASK_KEYS = {'decode.loss_ce', 'decode.acc_seg', 'aux.loss_ce', 'aux.acc_seg'}


# --------------------------------------------------------------------------
# Helpers: tiny model and real preprocessed batches
# --------------------------------------------------------------------------
def build_model(cfg, sd='keep', seed=0):
    model_cfg = copy.deepcopy(cfg.model)
    if sd != 'keep':
        model_cfg.sd = sd
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def batches(cfg, batch_size=2, seg_folder='aug'):
    """Preprocessed-ready batches of one sub-dataset, in file order.

    ``seg_folder='aug'`` gives SegmentationClassAug labels (no 255),
    ``'voc'`` SegmentationClass labels (255 on object borders).
    """
    loader = copy.deepcopy(cfg.train_dataloader)
    dataset = loader.dataset.datasets[1 if seg_folder == 'aug' else 0]
    dataset['_scope_'] = 'mmseg'
    loader.dataset = dataset
    loader.sampler = dict(type='DefaultSampler', shuffle=False)
    loader.batch_size = batch_size
    return list(Runner.build_dataloader(loader, seed=0))


def preprocess(model, data):
    data = model.data_preprocessor(data, training=True)
    return data['inputs'], data['data_samples']


@pytest.fixture
def det_cfg(tiny_cfg):
    """Tiny config without random augmentation."""
    return tiny_cfg(random_aug=False)


class Capture:
    """Records the inputs of the backbone and the logits of the decode
    head, i.e. the output of its final ``conv_seg`` (plain torch hooks; the
    model calls ``decode_head.forward`` directly, which bypasses hooks of
    the head itself)."""

    def __init__(self, model):
        self.inputs, self.logits = [], []
        self.handles = [
            model.backbone.register_forward_pre_hook(
                lambda m, args: self.inputs.append(args[0].detach().clone())),
            model.decode_head.conv_seg.register_forward_hook(
                lambda m, args, out: self.logits.append(out.detach().clone()))
        ]

    def remove(self):
        for handle in self.handles:
            handle.remove()


def sgd_step(model, losses, lr=0.5):
    """One plain SGD step on the summed losses (changes predictions)."""
    loss, _ = model.parse_losses(losses)
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:
                param -= lr * param.grad


def manual_dlb(now, prev, labels, temperature, align_corners=False):
    """T^2 KL(softmax(prev/T) || softmax(now/T)) at label resolution,
    averaged over the non-ignored pixels."""
    size = labels.shape[-2:]
    now = F.interpolate(
        now, size, mode='bilinear', align_corners=align_corners)
    prev = F.interpolate(
        prev, size, mode='bilinear', align_corners=align_corners)
    p = torch.softmax(prev / temperature, 1)
    kl = (p * (torch.log_softmax(prev / temperature, 1) -
               torch.log_softmax(now / temperature, 1))).sum(1)
    valid = labels != 255
    return kl[valid].mean() * temperature**2


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------
def test_builds_from_demo_config(det_cfg):
    model = build_model(det_cfg)
    assert type(model).__name__ == 'SelfDistillEncoderDecoder'
    assert isinstance(model, EncoderDecoder)
    assert isinstance(model, SelfDistillSegmentorMixin)
    assert isinstance(model.sd, DLB) and isinstance(model.sd.loss, DLBLoss)
    assert model.sd.loss.temperature == 3.0
    # SD state is not part of the module tree / checkpoints
    keys = set(model.state_dict())
    assert not any('sd' in k.split('.')[0] or 'teacher' in k for k in keys)
    assert set(keys) == set(build_model(det_cfg, sd=None).state_dict())


@pytest.mark.parametrize('sd, method_cls, loss_cls', [
    (dict(type='PSKD', loss=dict(alpha_T=0.5)), PSKD, PSKDLoss),
    (dict(type='CSKD'), CSKD, CSKDLoss),
    (None, type(None), None),
])
def test_sd_method_built_in_our_scope(det_cfg, sd, method_cls, loss_cls):
    # the model dict carries _scope_='mmseg' (inherited from mmseg::), yet
    # the SD method and its loss are found in epsd_mm's registries
    assert det_cfg.model._scope_ == 'mmseg'
    model = build_model(det_cfg, sd=sd)
    assert type(model.sd) is method_cls
    assert model.sd_enabled is (sd is not None)
    if loss_cls is not None:
        assert type(model.sd.loss) is loss_cls
    if method_cls is PSKD:  # loss options merge over the method's default
        assert model.sd.loss.alpha_T == 0.5


def test_old_sd_loss_key_explains_the_new_one(det_cfg):
    model_cfg = copy.deepcopy(det_cfg.model)
    model_cfg.pop('sd')
    model_cfg.sd_loss = dict(type='DLBLoss')
    with pytest.raises(TypeError, match=r"sd=dict\(type='DLB'"):
        with DefaultScope.overwrite_default_scope('epsd_mm'):
            MODELS.build(model_cfg)


def test_cascade_config_with_plain_segmentor_type_explains(det_cfg):
    model_cfg = copy.deepcopy(det_cfg.model)
    model_cfg.num_stages = 2
    with pytest.raises(TypeError, match='CascadeEncoderDecoder'):
        with DefaultScope.overwrite_default_scope('epsd_mm'):
            MODELS.build(model_cfg)


# --------------------------------------------------------------------------
# DLB
# --------------------------------------------------------------------------
def test_dlb_second_pass_reuses_exact_previous_batch(det_cfg):
    model = build_model(det_cfg)
    model.train()  # BN batch statistics and dropout on, as in training
    data = batches(det_cfg, seg_folder='voc')
    inputs1, samples1 = preprocess(model, data[0])
    inputs2, samples2 = preprocess(model, data[1])
    capture = Capture(model)

    losses1 = model.loss(inputs1, samples1)
    assert set(losses1) == TASK_KEYS | {'loss_dlb'}
    assert losses1['loss_dlb'].item() == 0  # no previous batch yet
    assert losses1['loss_dlb'].requires_grad
    sgd_step(model, losses1)  # the predictions on batch 1 change
    assert torch.equal(capture.inputs[0], inputs1)
    prev_inputs, prev_samples, prev_logits = model.sd.get_state()
    assert torch.equal(prev_inputs, inputs1)
    assert prev_samples == list(samples1)
    # the soft targets are exactly what the model predicted in that call
    assert torch.equal(prev_logits, capture.logits[0])
    assert not prev_logits.requires_grad

    losses2 = model.loss(inputs2, samples2)
    forward_input = capture.inputs[1]
    assert forward_input.shape[0] == 4
    assert torch.equal(forward_input[:2], inputs2)
    assert torch.equal(forward_input[2:], inputs1)  # pixel for pixel
    # the DLB term compares the new logits of batch 1 with the stored ones
    labels1 = torch.stack([s.gt_sem_seg.data[0] for s in samples1]).long()
    assert (labels1 == 255).any()  # VOC borders: there are ignore pixels
    expected = manual_dlb(capture.logits[1][2:].double(),
                          prev_logits.double(), labels1, 3.0)
    assert expected.item() > 1e-3
    assert losses2['loss_dlb'].item() == pytest.approx(
        expected.item(), rel=1e-4)
    # state moved on to batch 2
    prev_inputs, prev_samples, prev_logits = model.sd.get_state()
    assert torch.equal(prev_inputs, inputs2)
    assert torch.equal(prev_logits, capture.logits[1][:2])
    # the task losses cover both halves (DLB paper): 4 samples' labels
    decode = model.decode_head.loss_by_feat(capture.logits[1],
                                            list(samples2) + list(samples1))
    assert losses2['decode.loss_ce'].item() == pytest.approx(
        decode['loss_ce'].item(), rel=1e-6)
    capture.remove()


def test_dlb_excludes_ignore_pixels(det_cfg):
    """An image whose labels are all ignore_index takes no part in loss_dlb,
    whatever its soft targets are."""
    model = build_model(det_cfg)
    model.eval()  # deterministic: the same call twice gives the same loss
    data = batches(det_cfg, seg_folder='voc')
    inputs1, samples1 = preprocess(model, data[0])
    inputs2, samples2 = preprocess(model, data[1])
    sgd_step(model, model.loss(inputs1, samples1))
    prev_inputs, prev_samples, prev_logits = model.sd.get_state()
    prev_samples[0].gt_sem_seg.data[:] = 255  # image 0: all ignored

    def dlb_with_targets(targets):
        model.sd.set_state((prev_inputs, prev_samples, targets))
        with torch.no_grad():
            return model.loss(inputs2, samples2)['loss_dlb'].item()

    base = dlb_with_targets(prev_logits)
    assert base > 0
    garbage = prev_logits.clone()
    garbage[0] = torch.randn_like(garbage[0]) * 50
    assert dlb_with_targets(garbage) == pytest.approx(base, rel=1e-6)
    # control: the soft targets of a counted image do matter
    garbage = prev_logits.clone()
    garbage[1] = torch.randn_like(garbage[1]) * 50
    assert not math.isclose(dlb_with_targets(garbage), base, rel_tol=1e-3)


def test_dlb_restarts_when_input_size_changes(det_cfg):
    model = build_model(det_cfg)
    model.eval()
    data = batches(det_cfg)
    inputs1, samples1 = preprocess(model, data[0])
    with torch.no_grad():
        model.loss(inputs1, samples1)
        small = F.interpolate(inputs1, size=(32, 32))
        for sample in samples1:
            sample.gt_sem_seg = PixelData(
                data=sample.gt_sem_seg.data[:, :32, :32])
            sample.set_metainfo(dict(img_shape=(32, 32), pad_shape=(32, 32)))
        losses = model.loss(small, samples1)
    assert losses['loss_dlb'].item() == 0
    assert model.sd.get_state()[0].shape == (2, 3, 32, 32)
    model.sd.reset()
    assert model.sd.get_state() is None


@pytest.mark.e2e
def test_dlb_alignment_through_runner_with_random_aug(tiny_cfg):
    """Under the Runner, with random crops/flips/photometric changes, the
    second pass over a batch gets its exact tensors of the first pass."""
    captured = []

    class CaptureAfterPruning(Hook):
        priority = 'LOWEST'

        def before_train(self, runner):
            runner.model.backbone.register_forward_pre_hook(
                lambda m, args: captured.append(args[0].detach().clone()))

    runner = Runner.from_cfg(tiny_cfg(max_iters=3))
    runner.register_hook(CaptureAfterPruning())
    runner.train()
    train_passes = captured[:3]  # then validation forwards follow
    assert [x.shape[0] for x in train_passes] == [2, 4, 4]
    assert torch.equal(train_passes[1][2:], train_passes[0][:2])
    assert torch.equal(train_passes[2][2:], train_passes[1][:2])
    # random augmentation: new batches are not the previous ones
    assert not torch.equal(train_passes[1][:2], train_passes[0][:2])


# --------------------------------------------------------------------------
# PS-KD
# --------------------------------------------------------------------------
def test_pskd_replaces_decode_ce_keeps_aux(det_cfg):
    model = build_model(det_cfg, sd=dict(type='PSKD'))
    model.eval()
    inputs, samples = preprocess(model, batches(det_cfg)[0])
    with pytest.raises(RuntimeError, match='SelfDistillHook'):
        model.loss(inputs, samples)

    teacher = build_model(det_cfg, sd=None, seed=1).eval()
    model.sd.teacher = teacher
    model.sd.progress = 0.0
    with torch.no_grad():
        losses = model.loss(inputs, samples)
        with model.sd_disabled():
            plain = model.loss(inputs, samples)
    assert 'decode.loss_ce' not in losses
    assert set(losses) == (TASK_KEYS - {'decode.loss_ce'}) | {'loss_pskd'}
    assert set(plain) == TASK_KEYS
    assert losses['aux.loss_ce'].item() == pytest.approx(
        plain['aux.loss_ce'].item(), rel=1e-6)
    # at progress 0 the target is the one-hot label: PS-KD == decode CE
    # (aug labels have no ignore pixels, so the averages agree)
    assert losses['loss_pskd'].item() == pytest.approx(
        plain['decode.loss_ce'].item(), rel=1e-5)

    # later in training the teacher's predictions enter the target
    model.sd.progress = 1.0
    with torch.no_grad():
        late = model.loss(inputs, samples)['loss_pskd'].item()
        logits = model.sd_forward(inputs)[0]
        teacher_logits = teacher.sd_forward(inputs)[0]
    labels = torch.stack([s.gt_sem_seg.data[0] for s in samples]).long()
    size = labels.shape[-2:]
    log_p = torch.log_softmax(
        F.interpolate(logits, size, mode='bilinear'), 1)
    q_teacher = torch.softmax(
        F.interpolate(teacher_logits, size, mode='bilinear'), 1)
    q = 0.2 * F.one_hot(labels, 21).permute(0, 3, 1, 2) + 0.8 * q_teacher
    expected = (q * (torch.log(q.clamp_min(1e-30)) - log_p)).sum(1).mean()
    assert late == pytest.approx(expected.item(), rel=1e-4)
    assert not math.isclose(late, losses['loss_pskd'].item(), rel_tol=1e-3)


# --------------------------------------------------------------------------
# CS-KD
# --------------------------------------------------------------------------
def test_cskd_anchor_partner_batches(det_cfg):
    model = build_model(det_cfg, sd=dict(type='CSKD'))
    model.eval()
    data = batches(det_cfg, batch_size=4)
    inputs, samples = preprocess(model, data[0])
    capture = Capture(model)
    losses = model.loss(inputs, samples)
    assert set(losses) == TASK_KEYS | {'loss_cskd'}
    # anchors (even positions) with gradient, partners (odd) without
    assert torch.equal(capture.inputs[0], inputs[0::2])
    assert torch.equal(capture.inputs[1], inputs[1::2])
    with torch.no_grad():
        with model.sd_disabled():
            anchors_only = model.loss(inputs[0::2].contiguous(),
                                      samples[0::2])
    assert losses['decode.loss_ce'].item() == pytest.approx(
        anchors_only['decode.loss_ce'].item(), rel=1e-6)
    # the partner predictions are detached: gradients only via anchors
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(losses['loss_cskd'], params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    expected = model.sd.loss(
        model.sd_align_logits(capture.logits[0], samples[0::2]),
        model.sd_align_logits(capture.logits[1], samples[1::2]),
        model.sd_labels(samples[0::2]), model.sd_labels(samples[1::2]))
    assert losses['loss_cskd'].item() == pytest.approx(
        expected.item(), rel=1e-6)
    capture.remove()
    with pytest.raises(ValueError, match='pairs'):
        model.loss(inputs[:3], samples[:3])


# --------------------------------------------------------------------------
# Plain behaviour: sd off and inference are mmseg's
# --------------------------------------------------------------------------
def _plain_encoder_decoder(cfg, state_dict):
    plain_cfg = copy.deepcopy(cfg.model)
    plain_cfg.pop('sd')
    plain_cfg.type = plain_cfg.pop('segmentor_type')
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        plain = MODELS.build(plain_cfg)
    assert type(plain) is EncoderDecoder
    plain.load_state_dict(state_dict, strict=True)
    return plain.eval()


def test_sd_disabled_and_plain_model_equal_mmseg(det_cfg):
    model = build_model(det_cfg).eval()
    plain = _plain_encoder_decoder(det_cfg, model.state_dict())
    inputs, samples = preprocess(model, batches(det_cfg, seg_folder='voc')[0])
    with torch.no_grad():
        expected = plain.loss(inputs, samples)
        with model.sd_disabled():
            assert model.sd_enabled is False
            losses = model.loss(inputs, samples)
        assert model.sd_enabled is True
        assert model.sd.get_state() is None  # no DLB state touched
        no_sd = build_model(det_cfg, sd=None).eval()
        no_sd.load_state_dict(model.state_dict())
        no_sd_losses = no_sd.loss(inputs, samples)
    assert set(losses) == set(expected) == set(no_sd_losses) == TASK_KEYS
    for key in expected:
        assert torch.equal(losses[key], expected[key]), key
        assert torch.equal(no_sd_losses[key], expected[key]), key


@pytest.mark.e2e
def test_predict_identical_to_mmseg(det_cfg, helpers):
    model = build_model(det_cfg).eval()
    plain = _plain_encoder_decoder(det_cfg, model.state_dict())
    loader = copy.deepcopy(det_cfg.val_dataloader)
    data = next(iter(Runner.build_dataloader(loader, seed=0)))
    ours = model.data_preprocessor(data, training=False)
    theirs = plain.data_preprocessor(copy.deepcopy(data), training=False)
    with torch.no_grad():
        tensor_ours = model(ours['inputs'], mode='tensor')
        tensor_theirs = plain(theirs['inputs'], mode='tensor')
        pred_ours = model.predict(ours['inputs'], ours['data_samples'])
        pred_theirs = plain.predict(theirs['inputs'],
                                    theirs['data_samples'])
    assert torch.equal(tensor_ours, tensor_theirs)
    assert len(pred_ours) == len(pred_theirs) == 2
    for a, b in zip(pred_ours, pred_theirs):
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
        assert a.pred_sem_seg.shape == a.gt_sem_seg.shape


# --------------------------------------------------------------------------
# Each SD method trains through a Runner on a pruned network
# --------------------------------------------------------------------------
SD_RUNS = {
    'dlb': ({}, 'loss_dlb'),
    # as configs/deeplab_voc/epsd_pskd.py and epsd_cskd.py do it
    'pskd': ({
        'model.sd': dict(_delete_=True, type='PSKD')
    }, 'loss_pskd'),
    'cskd': ({
        'model.sd': dict(
            _delete_=True, type='CSKD', loss=dict(temperature=4.0)),
        'train_dataloader.batch_size': 4,
        'train_dataloader.sampler': dict(
            _delete_=True, type='epsd_mm.ClassPairSampler', shuffle=True),
    }, 'loss_cskd'),
}


@pytest.mark.e2e
@pytest.mark.parametrize('method', sorted(SD_RUNS))
def test_sd_method_trains_pruned_network(tiny_cfg, helpers, tmp_path,
                                         method):
    overrides, loss_key = SD_RUNS[method]
    pairs = []

    class RecordBatches(Hook):

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            samples = data_batch['data_samples']
            pairs.append([
                set(s.gt_sem_seg.data.unique().tolist()) - {255}
                for s in samples
            ])

    runner = Runner.from_cfg(tiny_cfg(overrides, max_iters=2))
    runner.register_hook(RecordBatches())
    runner.train()
    model = runner.model
    assert type(model.sd).__name__ == method.upper()
    masks = get_masks(model)
    prunable = prunable_parameters(model)
    total = sum(p.numel() for p in prunable.values())
    assert masks.keys() == prunable.keys()
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert (params[name].detach()[~mask] == 0).all()
    log = helpers.read_logs(str(tmp_path))
    assert 'on the sd loss' in log
    lines = [l for l in log.splitlines() if 'Iter(train) [2/2]' in l]
    assert len(lines) == 1 and f'{loss_key}: ' in lines[0]
    value = float(lines[0].split(f'{loss_key}: ')[1].split()[0])
    assert math.isfinite(value) and value > 0
    if method == 'dlb':
        # the DLB state left by scoring was cleared: no target at iteration 1
        first = [l for l in log.splitlines() if 'Iter(train) [1/2]' in l]
        assert 'loss_dlb: 0.0000' in first[0]
    if method == 'pskd':
        assert 'decode.loss_ce' not in lines[0] and 'aux.loss_ce' in lines[0]
    if method == 'cskd':
        for batch in pairs:
            assert len(batch) == 4
            for anchor, partner in zip(batch[0::2], batch[1::2]):
                assert anchor & partner  # a shared class
