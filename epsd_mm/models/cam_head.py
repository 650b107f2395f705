"""Class activation map (CAM) classification head."""
from typing import Dict, Optional, Tuple

from mmengine.model import BaseModule
from torch import Tensor, nn

from epsd_mm.registry import MODELS


@MODELS.register_module()
class CAMHead(BaseModule):
    """A 1x1 convolution classifier whose outputs are class activation maps.

    Class activation mapping (Zhou et al., CVPR 2016) classifies with global
    average pooling followed by a linear layer. Both are linear, so applying
    the classifier at every position first (a 1x1 convolution) and pooling
    afterwards gives the same logits, and the maps before pooling are the
    CAMs: ``cams = conv(feat)``, ``logits = mean(cams)``.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the last backbone feature map.
        loss_cls (dict): Config of the classification loss. Defaults to
            ``dict(type='mmdet.CrossEntropyLoss', loss_weight=1.0)``.
        init_cfg (dict, optional): Initialisation config. Defaults to a
            normal init of the classifier with std 0.01.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 loss_cls: dict = dict(
                     type='mmdet.CrossEntropyLoss', loss_weight=1.0),
                 init_cfg: Optional[dict] = dict(
                     type='Normal', layer='Conv2d', std=0.01)) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
        self.num_classes = num_classes
        self.conv_cls = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        self.loss_cls = MODELS.build(loss_cls)

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """Class activation maps of the last feature map.

        Args:
            feats (tuple[Tensor]): Backbone outputs; only the last is used.

        Returns:
            Tensor: CAMs of shape ``(N, num_classes, h, w)``.
        """
        return self.conv_cls(feats[-1])

    @staticmethod
    def pool(cams: Tensor) -> Tensor:
        """Logits ``(N, num_classes)``: the spatial mean of the CAMs."""
        return cams.mean(dim=(2, 3))

    def loss(self, logits: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """Classification loss.

        Args:
            logits (Tensor): Logits of shape ``(N, num_classes)``.
            labels (Tensor): Class indices of shape ``(N,)``.

        Returns:
            dict[str, Tensor]: ``{'loss_cls': loss}``.
        """
        return dict(loss_cls=self.loss_cls(logits, labels))
