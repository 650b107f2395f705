import pytest
import torch
from torch import nn

from epsd_mm.deploy import fold_masks
from epsd_mm.pruning import MASK_SUFFIX, apply_masks


def _pruned_conv_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4))
    mask = torch.rand(4, 2, 3, 3) > 0.5
    apply_masks(model, {'0.weight': mask})
    state = model.state_dict()
    # A weight negative at a pruned position would fold to -0.0 by
    # multiplication; fold_masks must write +0.0 there.
    state['0.weight'] = state['0.weight'].masked_fill(~mask, -1.5)
    return state, mask


def test_fold_masks_multiplies_in_and_drops_masks():
    state, mask = _pruned_conv_state()
    folded, masks = fold_masks(state)
    assert list(folded) == [k for k in state if not k.endswith(MASK_SUFFIX)]
    assert set(masks) == {'0.weight'} and torch.equal(masks['0.weight'], mask)
    weight = folded['0.weight']
    assert torch.equal(weight[mask], state['0.weight'][mask])
    pruned = weight[~mask]
    assert (pruned == 0).all() and not torch.signbit(pruned).any()
    for key in ('0.bias', '1.running_var', '1.num_batches_tracked'):
        assert folded[key] is state[key]


def test_fold_masks_refuses_a_state_dict_without_masks():
    state = nn.Conv2d(2, 4, 3).state_dict()
    with pytest.raises(ValueError, match='no masks.*not a pruned model'):
        fold_masks(state)


def test_fold_masks_refuses_a_mask_of_another_shape():
    state, _ = _pruned_conv_state()
    state['0.weight' + MASK_SUFFIX] = torch.ones(4, 2, 1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match='has shape'):
        fold_masks(state)
