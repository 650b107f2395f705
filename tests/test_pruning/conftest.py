"""Tiny real OpenMMLab models and data for the pruning tests."""
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, List, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.backbones import ResNetV1c
from torch import Tensor

Batch = Tuple[Tensor, Tensor]
NUM_CLASSES = 3


class TinySegNet(nn.Module):
    """mmseg ResNetV1c-18 with 8 base channels and a 1x1 conv head.

    ``loss`` is a method other than ``forward``, as in mm models, so the
    scorers must run arbitrary methods on substituted parameters.
    """

    def __init__(self, **backbone_kwargs) -> None:
        super().__init__()
        self.backbone = ResNetV1c(
            depth=18,
            stem_channels=8,
            base_channels=8,
            out_indices=(3, ),
            **backbone_kwargs)
        self.decode_head = nn.Conv2d(64, NUM_CLASSES, 1)

    def forward(self, img: Tensor) -> Tensor:
        logits = self.decode_head(self.backbone(img)[-1])
        return F.interpolate(
            logits, size=img.shape[-2:], mode='bilinear', align_corners=False)

    def loss(self, batch: Batch) -> Tensor:
        img, seg = batch
        return F.cross_entropy(self(img), seg)


def seg_loss(model: nn.Module, batch: Batch) -> Tensor:
    """The scoring loss: calls ``model.loss``, not ``model.forward``."""
    return model.loss(batch)


@pytest.fixture
def make_seg_model() -> Callable[..., TinySegNet]:
    """Factory of seeded :class:`TinySegNet` in train mode."""

    def make(seed: int = 0, **backbone_kwargs) -> TinySegNet:
        torch.manual_seed(seed)
        return TinySegNet(**backbone_kwargs).train()

    return make


@pytest.fixture
def seg_model(make_seg_model) -> TinySegNet:
    return make_seg_model()


@pytest.fixture
def seg_batches() -> List[Batch]:
    """Three batches of two 32x32 images with per-pixel labels."""
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(2, 3, 32, 32, generator=gen),
             torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=gen))
            for _ in range(3)]


@pytest.fixture
def seg_loss_fn() -> Callable[[nn.Module, Batch], Tensor]:
    return seg_loss


class TinyNet(nn.Module):
    """Float64 ``Linear(3, 4) - Tanh - Linear(4, 2)`` as ``backbone``.

    Small enough for exact references (finite differences, Hessians).
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)


@pytest.fixture
def tiny_net() -> TinyNet:
    return TinyNet()


@pytest.fixture
def tiny_inputs() -> List[Tensor]:
    """Two float64 batches of six 3-d inputs."""
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(6, 3, generator=gen, dtype=torch.float64)
        for _ in range(2)
    ]


@contextmanager
def _unchanged(model: nn.Module) -> Iterator[None]:
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = [(m, m.training) for m in model.modules()]
    yield
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f'{key} changed'
    for module, training in modes:
        assert module.training == training, f'mode of {module} changed'
    for name, param in model.named_parameters():
        assert param.grad is None, f'{name}.grad was set'


@pytest.fixture
def assert_unchanged() -> Callable[[nn.Module], ContextManager[None]]:
    """Context manager asserting that the block leaves ``model`` as it was:
    parameters, buffers (BN running stats), train/eval modes and ``.grad``.
    """
    return _unchanged
