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
                      'values': tensor, 'count': int, 'crc32': int}},
     'dense_crc32': {key: int}}

``count`` is the number of kept values and ``crc32`` the
:func:`zlib.crc32` of the bitmask bytes followed by the values bytes;
``dense_crc32`` that of each dense tensor's bytes. Files written before they
existed load with the structural checks only (counts against the bitmask,
finite kept values).
"""
import math
import zlib
from collections import OrderedDict
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

FORMAT = 'epsd_mm.bitmask/1'
#: How to get a sound file again, for the error messages.
REEXPORT = ('re-export it from the training checkpoint with '
            'tools/deploy/export.py')


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


def tensor_crc32(*tensors: Tensor) -> int:
    """CRC-32 of the raw bytes of ``tensors``, in order.

    Args:
        *tensors (Tensor): CPU tensors of any dtype.

    Returns:
        int: :func:`zlib.crc32` of their concatenated bytes.
    """
    crc = 0
    for tensor in tensors:
        raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        crc = zlib.crc32(raw.numpy().tobytes(), crc)
    return crc


def encode_bitmask(tensor: Tensor, mask: Tensor) -> dict:
    """Encode a tensor that is zero wherever ``mask`` is False.

    Args:
        tensor (Tensor): The (folded) weight.
        mask (Tensor): Its keep-mask, same shape.

    Returns:
        dict: ``shape``, the packed ``bitmask`` (uint8, row-major order),
        the kept ``values`` in that order, their ``count`` and the
        ``crc32`` of the bitmask and values bytes.
    """
    keep = mask.detach().cpu().bool().flatten()
    bitmask = torch.from_numpy(np.packbits(keep.numpy()))
    values = tensor.detach().cpu().flatten()[keep].clone()
    return dict(
        shape=tuple(tensor.shape),
        bitmask=bitmask,
        values=values,
        count=values.numel(),
        crc32=tensor_crc32(bitmask, values))


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
            sparse=sparse,
            dense_crc32={k: tensor_crc32(v)
                         for k, v in dense.items()}), path)
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
    """Read a file written by :func:`save_sparse_checkpoint`, checking it.

    Every tensor is checked against the counts and checksums stored at
    export (files written before they existed: the bitmask's size and
    number of set bits against the shape and the values, and finite kept
    values).

    Args:
        path (str): The sparse checkpoint.
        with_meta (bool): Also return its ``meta``. Defaults to False.

    Returns:
        OrderedDict[str, Tensor] | tuple: The dense state dict, equal bit
        for bit to the folded one it was written from (``(state_dict,
        meta)`` with ``with_meta=True``); load it with
        ``model.load_state_dict``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a torch file, not of this format, or
            damaged (a missing entry, a tensor whose size, count or
            checksum differs from what was written); the message names the
            tensor and the file.
    """
    from epsd_mm.utils.checkpoint import load_checkpoint_file
    content = load_checkpoint_file(path, fix=REEXPORT)
    if not isinstance(content, dict) or content.get('format') != FORMAT:
        raise ValueError(
            f'{path} is not a sparse checkpoint of format {FORMAT!r} (it '
            'was not written by tools/deploy/export.py); load a plain '
            'checkpoint with mmengine.runner.load_checkpoint instead.')
    _check_layout(content, path)
    dense_crc = content.get('dense_crc32', {})
    state_dict = OrderedDict()
    for key in content['keys']:
        if key in content['sparse']:
            state_dict[key] = _decode_checked(content['sparse'][key], key,
                                              path)
        elif key in content['dense']:
            value = content['dense'][key]
            if not isinstance(value, Tensor):
                raise _damaged(path, key, f'a {type(value).__name__} '
                               'instead of a tensor')
            if key in dense_crc and tensor_crc32(value) != dense_crc[key]:
                raise _damaged(path, key, 'its bytes differ from those '
                               'written (checksum mismatch)')
            state_dict[key] = value
        else:
            raise _damaged(path, key, 'listed in "keys" but stored neither '
                           'dense nor sparse')
    return (state_dict, content['meta']) if with_meta else state_dict


def _damaged(path: str, key: str, problem: str) -> ValueError:
    return ValueError(f'{path} is damaged: tensor {key!r}: {problem}; '
                      f'{REEXPORT}')


def _check_layout(content: Mapping[str, Any], path: str) -> None:
    """Refuse a file of the format whose top-level entries are missing or
    of the wrong type."""
    expected = dict(keys=list, dense=dict, sparse=dict, meta=dict)
    for name, kind in expected.items():
        if not isinstance(content.get(name), kind):
            what = ('missing' if name not in content else
                    f'a {type(content[name]).__name__}, not a '
                    f'{kind.__name__}')
            raise ValueError(f'{path} is damaged: its {name!r} entry is '
                             f'{what}; {REEXPORT}')


def _decode_checked(entry: Any, key: str, path: str) -> Tensor:
    """Decode one sparse entry after checking it against its shape, count
    and checksum."""
    if not isinstance(entry, Mapping):
        raise _damaged(path, key, f'a {type(entry).__name__} instead of '
                       'its bitmask entry')
    missing = [k for k in ('shape', 'bitmask', 'values') if k not in entry]
    if missing:
        raise _damaged(path, key, f'its entry lacks {missing}')
    shape, bitmask, values = entry['shape'], entry['bitmask'], entry['values']
    if not (isinstance(bitmask, Tensor) and bitmask.dtype == torch.uint8
            and bitmask.dim() == 1 and isinstance(values, Tensor)):
        raise _damaged(path, key, 'its bitmask is not a 1-D uint8 tensor '
                       'or its values are not a tensor')
    try:
        numel = math.prod(int(n) for n in shape)
    except (TypeError, ValueError):
        raise _damaged(path, key,
                       f'its shape {shape!r} is not a shape') from None
    if bitmask.numel() != (numel + 7) // 8:
        raise _damaged(
            path, key, f'its bitmask has {bitmask.numel()} bytes, its shape '
            f'{tuple(shape)} needs {(numel + 7) // 8}')
    if 'crc32' in entry and tensor_crc32(bitmask, values) != entry['crc32']:
        raise _damaged(path, key, 'its bitmask or kept values differ from '
                       'those written (checksum mismatch)')
    kept = int(np.unpackbits(bitmask.numpy(), count=numel).sum())
    count = entry.get('count', kept)
    if not kept == count == values.numel():
        raise _damaged(
            path, key, f'{values.numel()} kept values for {kept} set bits '
            f'of the bitmask' + (f' ({count} written)' if 'count' in entry
                                 else ''))
    if values.is_floating_point() and not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise _damaged(path, key, f'{bad} of its kept values are NaN or '
                       'infinite')
    return decode_bitmask(entry)
