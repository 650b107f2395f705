import math

import pytest
import torch
from torch import nn

from epsd_mm.deploy import (fold_masks, identical_state_dicts,
                            load_sparse_checkpoint, save_sparse_checkpoint)
from epsd_mm.pruning import apply_masks, random_scores, select_masks


def _folded(sparsity: float, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 33, 3))
    weights = {'0.weight': model[0].weight, '2.weight': model[2].weight}
    apply_masks(model, select_masks(random_scores(weights), sparsity))
    return fold_masks(model.state_dict())


def test_round_trip_is_bit_exact(tmp_path):
    folded, masks = _folded(0.9)
    # a kept -0.0 must come back as -0.0, not +0.0
    kept = masks['2.weight'].flatten().nonzero()[0, 0]
    folded['2.weight'].view(-1)[kept] = -0.0
    path = str(tmp_path / 'sparse.pth')
    save_sparse_checkpoint(path, folded, masks, meta=dict(note='x'))
    restored, meta = load_sparse_checkpoint(path, with_meta=True)
    assert identical_state_dicts(restored, folded)
    assert torch.signbit(restored['2.weight'].view(-1)[kept])
    assert meta == dict(note='x')


def test_identical_state_dicts_compares_bits():
    a = {'w': torch.tensor([0.0, 1.0])}
    assert identical_state_dicts(a, {'w': torch.tensor([0.0, 1.0])})
    assert not identical_state_dicts(a, {'w': torch.tensor([-0.0, 1.0])})
    assert not identical_state_dicts(
        a, {'w': torch.tensor([0.0, 1.0], dtype=torch.float64)})


def test_pruned_tensors_take_bitmask_plus_values(tmp_path):
    folded, masks = _folded(0.9)
    summary = save_sparse_checkpoint(
        str(tmp_path / 'sparse.pth'), folded, masks)
    numel = {k: m.numel() for k, m in masks.items()}
    kept = {k: int(m.sum()) for k, m in masks.items()}
    assert summary.num_sparse == 2
    assert summary.dense_bytes == 4 * sum(numel.values())
    assert summary.sparse_bytes == sum(
        math.ceil(numel[k] / 8) + 4 * kept[k] for k in masks)
    assert summary.ratio <= 0.15


def test_dense_tensors_stay_dense_when_smaller(tmp_path):
    folded, masks = _folded(0.01)  # a bitmask would add 1/32 for 1% saved
    path = str(tmp_path / 'sparse.pth')
    summary = save_sparse_checkpoint(path, folded, masks)
    assert summary.num_sparse == 0
    assert identical_state_dicts(load_sparse_checkpoint(path), folded)


def test_load_refuses_other_files(tmp_path):
    path = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict=nn.Conv2d(1, 1, 1).state_dict()), path)
    with pytest.raises(ValueError, match='not a sparse checkpoint'):
        load_sparse_checkpoint(path)


# ---- integrity: damaged files are refused, naming the tensor and file -----


def _written(tmp_path, sparsity: float = 0.9):
    """A sparse checkpoint on disk, its folded state dict and its raw
    content (as torch.load returns it)."""
    folded, masks = _folded(sparsity)
    path = str(tmp_path / 'sparse.pth')
    save_sparse_checkpoint(path, folded, masks)
    return path, folded, torch.load(path, weights_only=True)


def _refused(path: str, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        load_sparse_checkpoint(path)
    message = str(info.value)
    assert path in message and 'tools/deploy/export.py' in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_flipped_bytes_refused(tmp_path):
    path, folded, content = _written(tmp_path)
    values = content['sparse']['2.weight']['values']
    raw = bytearray(open(path, 'rb').read())
    start = bytes(raw).find(values.numpy().tobytes())
    assert start > 0
    for offset in (5, 17, 40):  # three flipped bytes among the kept values
        raw[start + offset] ^= 0x5A
    open(path, 'wb').write(bytes(raw))
    _refused(path, "'2.weight'", 'checksum mismatch')


def test_flipped_bytes_of_a_dense_tensor_refused(tmp_path):
    path, folded, content = _written(tmp_path)
    bias = content['dense']['2.bias']
    raw = bytearray(open(path, 'rb').read())
    start = bytes(raw).find(bias.numpy().tobytes())
    raw[start + 3] ^= 0x01
    open(path, 'wb').write(bytes(raw))
    _refused(path, "'2.bias'", 'checksum mismatch')


def _rewrite(path: str, content: dict) -> None:
    torch.save(content, path)


def test_halved_bitmask_refused(tmp_path):
    path, _, content = _written(tmp_path)
    entry = content['sparse']['0.weight']
    entry['bitmask'] = entry['bitmask'][:entry['bitmask'].numel() // 2]
    _rewrite(path, content)
    _refused(path, "'0.weight'", 'bitmask has')


def test_nan_among_kept_values_refused(tmp_path):
    path, _, content = _written(tmp_path)
    content['sparse']['2.weight']['values'][3] = float('nan')
    _rewrite(path, content)
    _refused(path, "'2.weight'", 'checksum mismatch')
    # a file without checksums (written before they existed): NaN refused
    for entry in content['sparse'].values():
        del entry['crc32'], entry['count']
    del content['dense_crc32']
    _rewrite(path, content)
    _refused(path, "'2.weight'", 'NaN or infinite')


def test_too_few_values_refused(tmp_path):
    path, _, content = _written(tmp_path)
    entry = content['sparse']['2.weight']
    entry['values'] = entry['values'][:-1]
    del entry['crc32']  # the count is checked without the checksum too
    _rewrite(path, content)
    _refused(path, "'2.weight'", 'kept values for')


@pytest.mark.parametrize('where', ['top', 'tensor', 'entry'])
def test_missing_key_refused(tmp_path, where):
    path, _, content = _written(tmp_path)
    if where == 'top':
        del content['sparse']
        fragment = "'sparse' entry is missing"
    elif where == 'tensor':
        del content['dense']['2.bias']
        fragment = "'2.bias'"
    else:
        del content['sparse']['0.weight']['values']
        fragment = "lacks ['values']"
    _rewrite(path, content)
    _refused(path, fragment)


@pytest.mark.parametrize('garbage', ['random', 'half'])
def test_random_or_truncated_bytes_refused(tmp_path, garbage):
    path, _, _ = _written(tmp_path)
    raw = open(path, 'rb').read()
    if garbage == 'random':
        raw = torch.randint(0, 256, (4096, ), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0)
                            ).numpy().tobytes()
    else:
        raw = raw[:len(raw) // 2]
    open(path, 'wb').write(raw)
    _refused(path, 'is not a readable checkpoint')


def test_files_without_checksums_still_load(tmp_path):
    path, folded, content = _written(tmp_path)
    for entry in content['sparse'].values():
        del entry['crc32'], entry['count']
    del content['dense_crc32']
    _rewrite(path, content)
    assert identical_state_dicts(load_sparse_checkpoint(path), folded)
