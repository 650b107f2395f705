import math

import pytest

from epsd_mm.datasets.samplers import ClassPairSampler


class LabelledDataset:
    """Minimal dataset: only the class indices of each sample."""

    def __init__(self, cat_ids):
        self.cat_ids = cat_ids

    def __len__(self):
        return len(self.cat_ids)

    def get_cat_ids(self, idx):
        return self.cat_ids[idx]


# 11 samples; class 3 has a single sample.
SINGLE_LABEL = LabelledDataset([[0], [1], [2], [0], [1], [2], [0], [1], [2],
                                [0], [3]])


def pairs(sampler):
    indices = list(sampler)
    assert len(indices) == len(sampler)
    return list(zip(indices[0::2], indices[1::2]))


def test_partners_share_the_class():
    sampler = ClassPairSampler(SINGLE_LABEL, seed=0, rank=0, world_size=1)
    for anchor, partner in pairs(sampler):
        assert SINGLE_LABEL.get_cat_ids(anchor) == SINGLE_LABEL.get_cat_ids(
            partner)
        # A class with >= 2 samples gives another sample; class 3 has one.
        assert (partner == anchor) == (anchor == 10)
    anchors = [a for a, _ in pairs(sampler)]
    assert sorted(anchors) == list(range(len(SINGLE_LABEL)))


def test_multi_label_partner_shares_a_class():
    dataset = LabelledDataset([[0, 1], [1], [2, 0], [2], [], [1, 2]])
    sampler = ClassPairSampler(dataset, seed=1, rank=0, world_size=1)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for anchor, partner in pairs(sampler):
            if dataset.get_cat_ids(anchor):
                assert partner != anchor
                assert set(dataset.get_cat_ids(anchor)) & set(
                    dataset.get_cat_ids(partner))
            else:  # no class at all: its own partner
                assert partner == anchor


def test_excluded_classes_never_pair():
    # Class 0 plays the background: every sample has it.
    dataset = LabelledDataset([[0, 1], [0, 2], [0, 1], [0, 2], [0]])
    sampler = ClassPairSampler(
        dataset, seed=0, rank=0, world_size=1, exclude_classes=(0, ))
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for anchor, partner in pairs(sampler):
            shared = set(dataset.get_cat_ids(anchor)) & set(
                dataset.get_cat_ids(partner)) - {0}
            assert shared or (anchor == partner == 4)


@pytest.mark.parametrize('round_up', [True, False])
def test_two_ranks_shard_the_anchors(round_up):
    samplers = [
        ClassPairSampler(
            SINGLE_LABEL, seed=7, round_up=round_up, rank=rank, world_size=2)
        for rank in range(2)
    ]
    anchors = [[a for a, _ in pairs(s)] for s in samplers]
    if round_up:
        assert [len(s) for s in samplers] == [2 * math.ceil(11 / 2)] * 2
        # Padded by repeating the permutation: every sample, one twice.
        assert set(anchors[0] + anchors[1]) == set(range(11))
        assert len(anchors[0] + anchors[1]) == 12
    else:
        assert [len(s) for s in samplers] == [12, 10]
        assert sorted(anchors[0] + anchors[1]) == list(range(11))
    # The ranks interleave one permutation, as mmengine's DefaultSampler.
    unsharded = [
        a for a, _ in pairs(
            ClassPairSampler(SINGLE_LABEL, seed=7, rank=0, world_size=1))
    ]
    assert anchors[0] == unsharded[0::2]
    assert anchors[1] == (unsharded * 2)[1:12 if round_up else 11:2]


def test_deterministic_per_epoch():

    def stream(epoch, shuffle=True):
        sampler = ClassPairSampler(
            SINGLE_LABEL, shuffle=shuffle, seed=3, rank=0, world_size=1)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert stream(0) == stream(0)
    assert stream(1) == stream(1)
    assert stream(0) != stream(1)
    assert stream(0, shuffle=False)[0::2] == list(range(len(SINGLE_LABEL)))


class UnlabelledDataset:
    """Neither ``get_cat_ids`` nor segmentation maps."""

    def __len__(self):
        return 2

    def get_data_info(self, idx):
        return dict(img_path=f'{idx}.jpg')


def test_needs_classes():
    with pytest.raises(TypeError, match='get_cat_ids'):
        ClassPairSampler(UnlabelledDataset(), rank=0, world_size=1)
    with pytest.raises(ValueError, match='rank'):
        ClassPairSampler(SINGLE_LABEL, rank=2, world_size=2)
