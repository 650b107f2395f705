import pytest
import torch
import torch.nn.functional as F

from epsd_mm.models.cam_head import CAMHead


def test_logits_are_gap_then_linear():
    head = CAMHead(num_classes=5, in_channels=8)
    head.init_weights()
    feat = torch.randn(2, 8, 3, 4)
    cams = head((torch.randn(2, 4, 6, 8), feat))  # uses the last feature
    assert cams.shape == (2, 5, 3, 4)
    weight = head.conv_cls.weight.flatten(1)
    expected = F.linear(feat.mean(dim=(2, 3)), weight, head.conv_cls.bias)
    assert torch.allclose(head.pool(cams), expected, atol=1e-6)


def test_loss_is_cross_entropy():
    head = CAMHead(num_classes=3, in_channels=4)
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 2])
    losses = head.loss(logits, labels)
    assert set(losses) == {'loss_cls'}
    assert torch.allclose(losses['loss_cls'], F.cross_entropy(logits, labels))


def test_rejects_no_class():
    with pytest.raises(ValueError, match='num_classes'):
        CAMHead(num_classes=0, in_channels=4)
