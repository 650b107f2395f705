"""Samplers that build the (anchor, partner) batches of CS-KD."""
import math
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Sized

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from epsd_mm.registry import DATA_SAMPLERS
from .cat_ids import sample_cat_ids


@DATA_SAMPLERS.register_module()
class ClassPairSampler(Sampler):
    """Yield every anchor followed by a partner of the same class.

    The index stream is ``anchor_0, partner_0, anchor_1, partner_1, ...``, as
    CS-KD (class-wise self-knowledge distillation) expects: the model treats
    the even positions of a batch as anchors and the odd positions as their
    partners. **The batch size must therefore be even**, so that no pair is
    split across two batches.

    Anchors are drawn like MMEngine's ``DefaultSampler`` (a shuffled or
    sequential permutation, padded to a multiple of the world size, then
    sharded ``rank::world_size``). A partner is drawn uniformly among the other
    samples of a class the anchor belongs to
    (:func:`~epsd_mm.datasets.cat_ids.sample_cat_ids`: ``get_cat_ids`` of the
    dataset, or the labels of its segmentation maps): for a multi-label sample
    (e.g. a segmentation image) the partner shares at least one class with
    it. A sample that is the only one of its classes, or has no class at all,
    is its own partner (seen again with another random augmentation).
    Anchors and partners depend only on ``seed``, the epoch and the rank, so
    a resumed run replays them.

    Args:
        dataset (Sized): The dataset, with ``get_cat_ids(idx)`` or
            segmentation maps (see ``sample_cat_ids``).
        shuffle (bool): Whether to shuffle the anchors. Defaults to True.
        seed (int, optional): Random seed; ``None`` draws one and
            synchronises it across ranks. Defaults to None.
        round_up (bool): Whether to pad the anchors so that every rank gets
            the same number (as in ``DefaultSampler``). Defaults to True.
        rank (int, optional): Rank of this process; ``None`` asks
            ``mmengine.dist``. Defaults to None.
        world_size (int, optional): Number of processes; ``None`` asks
            ``mmengine.dist``. Defaults to None.
        exclude_classes (Sequence[int]): Classes that never make a pair,
            e.g. ``(0, )`` for the background of segmentation datasets, so
            partners share an object class. Defaults to ().
    """

    #: Declares the (anchor, partner) pairs CS-KD checks for.
    pairs_by_class = True

    def __init__(self,
                 dataset: Sized,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 round_up: bool = True,
                 rank: Optional[int] = None,
                 world_size: Optional[int] = None,
                 exclude_classes: Sequence[int] = ()) -> None:
        dist_rank, dist_world_size = get_dist_info()
        self.rank = dist_rank if rank is None else rank
        self.world_size = (
            dist_world_size if world_size is None else world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f'rank must be in [0, world_size), got rank='
                             f'{self.rank}, world_size={self.world_size}.')
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.round_up = round_up
        self.epoch = 0

        self._classes: List[List[int]] = []
        members: Dict[int, List[int]] = defaultdict(list)
        for idx in range(len(dataset)):
            cat_ids = sorted(
                set(sample_cat_ids(dataset, idx)) - set(exclude_classes))
            self._classes.append(cat_ids)
            for cat_id in cat_ids:
                members[cat_id].append(idx)
        self._members = {c: np.asarray(m) for c, m in members.items()}

        num_anchors = len(dataset)
        if self.round_up:
            self.num_anchors = math.ceil(num_anchors / self.world_size)
            self.total_anchors = self.num_anchors * self.world_size
        else:
            self.num_anchors = math.ceil(
                (num_anchors - self.rank) / self.world_size)
            self.total_anchors = num_anchors

    def _partner(self, idx: int, rng: np.random.Generator) -> int:
        """A random other sample sharing a class with ``idx``."""
        cat_ids = self._classes[idx]
        if not cat_ids:
            return idx
        members = self._members[cat_ids[rng.integers(len(cat_ids))]]
        if len(members) == 1:
            return idx
        # Draw among the members except ``idx`` itself.
        pick = int(rng.integers(len(members) - 1))
        position = int(np.searchsorted(members, idx))
        return int(members[pick + (pick >= position)])

    def __iter__(self) -> Iterator[int]:
        """Iterate over ``anchor, partner, anchor, partner, ...``."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            anchors = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            anchors = list(range(len(self.dataset)))
        if self.round_up:
            repeats = self.total_anchors // len(anchors) + 1
            anchors = (anchors * repeats)[:self.total_anchors]
        anchors = anchors[self.rank:self.total_anchors:self.world_size]
        # One stream per (epoch, rank): deterministic and resumable.
        rng = np.random.default_rng((self.seed, self.epoch, self.rank))
        for idx in anchors:
            yield idx
            yield self._partner(idx, rng)

    def __len__(self) -> int:
        """Number of indices on this rank: twice its number of anchors."""
        return 2 * self.num_anchors

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which reseeds the anchor order and the partners.

        Args:
            epoch (int): The epoch number.
        """
        self.epoch = epoch
