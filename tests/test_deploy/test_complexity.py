import pytest
import torch
from torch import nn

from epsd_mm.deploy import (format_complexity_table, model_complexity,
                            zero_weight_masks)
from epsd_mm.pruning import apply_masks, enforce_masks, remove_masks


class Toy(nn.Module):
    """conv 2->4 (3x3, pad 1, no bias) on 5x5, then linear 100->3.

    FLOPs (multiply-accumulates): conv 4*2*9*25 = 1800, linear 100*3 = 300.
    Params: conv 72, linear 300 + 3 bias = 303.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.head = nn.Linear(100, 3)

    def forward(self, x):
        return self.head(self.backbone(x).flatten(1))


def _masks():
    conv = torch.zeros(72, dtype=torch.bool)
    conv[:18] = True  # keep 18 of 72 (75% pruned)
    linear = torch.zeros(300, dtype=torch.bool)
    linear[::2] = True  # keep 150 of 300
    return {
        'backbone.weight': conv.view(4, 2, 3, 3),
        'head.weight': linear.view(3, 100)
    }


def test_dense_counts():
    rows = model_complexity(Toy(), torch.zeros(1, 2, 5, 5))
    assert rows == [('backbone', 72, 72, 1800, 1800),
                    ('head', 303, 303, 300, 300),
                    ('total', 375, 375, 2100, 2100)]


def test_pruned_weights_do_no_work():
    model = Toy()
    apply_masks(model, _masks())
    rows = model_complexity(model, torch.zeros(1, 2, 5, 5))
    # conv: 1800 * 18/72 = 450; linear: 300 * 150/300 = 150
    assert rows == [('backbone', 72, 18, 1800, 450),
                    ('head', 303, 153, 300, 150),
                    ('total', 375, 171, 2100, 600)]
    table = format_complexity_table(rows)
    assert 'effective FLOPs' in table and '0.286' in table  # 600 / 2100


def test_params_only_without_inputs():
    model = Toy()
    apply_masks(model, _masks())
    total = model_complexity(model)[-1]
    assert (total.params, total.effective_params) == (375, 171)
    assert total.flops is None and total.effective_flops is None
    assert 'FLOPs' not in format_complexity_table(model_complexity(model))


def test_folded_model_zero_weights_count_as_pruned():
    model = Toy()
    apply_masks(model, _masks())
    enforce_masks(model)
    remove_masks(model)
    masks = zero_weight_masks(model)
    assert set(masks) == {'backbone.weight', 'head.weight'}
    assert model_complexity(model, torch.zeros(1, 2, 5, 5),
                            masks)[-1] == ('total', 375, 171, 2100, 600)


def test_masks_outside_conv_and_linear_count_dense():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    mask = torch.tensor([True, False, False, False])
    apply_masks(model, {'1.weight': mask})
    with pytest.warns(UserWarning, match='counted dense: 1.weight'):
        total = model_complexity(model, torch.zeros(1, 4))[-1]
    assert total.effective_params == total.params - 3
    assert total.effective_flops == total.flops
