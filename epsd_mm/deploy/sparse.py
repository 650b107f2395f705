"""Store pruned weights as a bitmask plus their kept values.

An unstructured-pruned weight at density ``d`` stored densely takes
``numel * itemsize`` bytes; as a packed bitmask (one bit per entry) plus the
kept values it takes ``numel / 8 + d * numel * itemsize``: 0.131x of dense
for float32 at 90% sparsity. Decoding is exact: the kept values are copied
bit for bit and every other entry is ``+0.0``, exactly what
:func:`~epsd_mm.deploy.fold_masks` writes there.

File layout (a ``torch.save`` of plain containers, loadable with
``weights_only=True``)::

    {'format': 'epsd_mm.bitmask/1',
     'meta': {...},                   # as in the folded checkpoint
     'keys': [...],                   # state-dict order
     'dense': {key: tensor},          # everything not pruned
     'sparse': {key: {'shape': (...), 'bitmask': uint8 tensor,
                      'values': tensor}}}
"""
import math
from collections import OrderedDict
from typing import Mapping, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

FORMAT = 'epsd_mm.bitmask/1'


class SparseSummary(NamedTuple):
    """Bytes of the pruned tensors of a sparse checkpoint.

    Attributes:
        num_sparse (int): Tensors stored as bitmask plus values.
        dense_bytes (int): Their size stored densely.
        sparse_bytes (int): Their size as stored (bitmasks plus values).
    """
    num_sparse: int
    dense_bytes: int
    sparse_bytes: int

    @property
    def ratio(self) -> float:
        """Stored over dense bytes of the pruned tensors."""
        if not self.dense_bytes:
            return 1.0
        return self.sparse_bytes / self.dense_bytes


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def encode_bitmask(tensor: Tensor, mask: Tensor) -> dict:
    """Encode a tensor that is zero wherever ``mask`` is False.

    Args:
        tensor (Tensor): The (folded) weight.
        mask (Tensor): Its keep-mask, same shape.

    Returns:
        dict: ``shape``, the packed ``bitmask`` (uint8, row-major order) and
        the kept ``values`` in that order.
    """
    keep = mask.detach().cpu().bool().flatten()
    bits = np.packbits(keep.numpy())
    return dict(
        shape=tuple(tensor.shape),
        bitmask=torch.from_numpy(bits),
        values=tensor.detach().cpu().flatten()[keep].clone())


def decode_bitmask(entry: Mapping) -> Tensor:
    """Inverse of :func:`encode_bitmask`.

    Args:
        entry (Mapping): What :func:`encode_bitmask` returned.

    Returns:
        Tensor: The dense tensor; entries outside the mask are ``+0.0``.
    """
    values = entry['values']
    numel = math.prod(entry['shape'])
    keep = torch.from_numpy(
        np.unpackbits(entry['bitmask'].numpy(), count=numel).astype(bool))
    dense = torch.zeros(numel, dtype=values.dtype)
    return dense.masked_scatter_(keep, values).view(entry['shape'])


def save_sparse_checkpoint(path: str,
                           state_dict: Mapping[str, Tensor],
                           masks: Mapping[str, Tensor],
                           meta: Optional[dict] = None) -> SparseSummary:
    """Write a state dict with its pruned tensors in bitmask form.

    A masked tensor is stored sparse only when that is smaller than dense
    (a mask keeping more than ~97% of a float32 tensor is not).

    Args:
        path (str): Output file (``.pth``).
        state_dict (Mapping[str, Tensor]): The folded state dict: zero
            wherever a mask is False.
        masks (Mapping[str, Tensor]): Keep-mask of every pruned tensor, by
            state-dict key (see :func:`~epsd_mm.deploy.fold_masks`).
        meta (dict, optional): Stored as is. Defaults to None.

    Returns:
        SparseSummary: Sizes of the pruned tensors, dense and as stored.
    """
    unknown = sorted(set(masks) - set(state_dict))
    if unknown:
        raise KeyError(f'masks of tensors missing from the state dict: '
                       f'{unknown[:5]}')
    dense, sparse = {}, {}
    dense_bytes = sparse_bytes = 0
    for key, value in state_dict.items():
        if key in masks:
            entry = encode_bitmask(value, masks[key])
            size = _nbytes(entry['bitmask']) + _nbytes(entry['values'])
            if size < _nbytes(value):
                sparse[key] = entry
                dense_bytes += _nbytes(value)
                sparse_bytes += size
                continue
        dense[key] = value.detach().cpu()
    torch.save(
        dict(
            format=FORMAT,
            meta=meta or {},
            keys=list(state_dict),
            dense=dense,
            sparse=sparse), path)
    return SparseSummary(len(sparse), dense_bytes, sparse_bytes)


def identical_state_dicts(first: Mapping[str, Tensor],
                          second: Mapping[str, Tensor]) -> bool:
    """Whether two state dicts hold the same keys in the same order and
    tensors of the same dtype and shape with identical bytes (so ``-0.0``
    differs from ``0.0`` and NaNs compare by their bits)."""

    def raw(tensor: Tensor) -> Tensor:
        return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)

    return list(first) == list(second) and all(
        first[k].dtype == second[k].dtype and first[k].shape == second[k].shape
        and torch.equal(raw(first[k]), raw(second[k])) for k in first)


def load_sparse_checkpoint(path: str,
                           with_meta: bool = False
                           ) -> 'OrderedDict[str, Tensor]':
    """Read a file written by :func:`save_sparse_checkpoint`.

    Args:
        path (str): The sparse checkpoint.
        with_meta (bool): Also return its ``meta``. Defaults to False.

    Returns:
        OrderedDict[str, Tensor] | tuple: The dense state dict, equal bit
        for bit to the folded one it was written from (``(state_dict,
        meta)`` with ``with_meta=True``); load it with
        ``model.load_state_dict``.
    """
    content = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(content, dict) or content.get('format') != FORMAT:
        raise ValueError(
            f'{path} is not a sparse checkpoint of format {FORMAT!r} (it '
            'was not written by tools/deploy/export.py); load a plain '
            'checkpoint with mmengine.runner.load_checkpoint instead.')
    state_dict = OrderedDict()
    for key in content['keys']:
        state_dict[key] = (
            decode_bitmask(content['sparse'][key])
            if key in content['sparse'] else content['dense'][key])
    return (state_dict, content['meta']) if with_meta else state_dict
