"""The pruning record: one place in checkpoint meta, older layouts read."""
import io

import numpy as np
import pytest
import torch

from epsd_mm.pruning import RECORD_KEY, PruningRecord, to_plain

SPEC = dict(
    format='epsd_mm.slim',
    version=1,
    layers={'backbone.conv': dict(out=[0, 2], in_=None)},
    channels=dict(total=4, kept=2))


def _reloaded(checkpoint: dict) -> dict:
    """``checkpoint`` after a save and a weights-only load."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_round_trip_through_a_weights_only_checkpoint():
    record = PruningRecord()
    record.set_stage(
        'EarlyPruningHook',
        dict(criterion='prospr', sparsity=np.float64(0.9), scopes=('a', )),
        dict(rounds_done=1))
    record.set_stage(
        'GradualPruningHook', dict(criterion='magnitude'),
        state=dict(pruned_values={'w': torch.ones(3)}))
    checkpoint = dict(meta={}, state_dict={})
    record.write(checkpoint)
    loaded = PruningRecord.from_checkpoint(_reloaded(checkpoint))
    stage = loaded.stages['EarlyPruningHook']
    # plain values only: numpy scalars and tuples become str/float/list
    assert stage['config']['scopes'] == ['a']
    assert stage['progress'] == {'rounds_done': 1}
    assert loaded.criteria() == {
        'EarlyPruningHook': 'prospr',
        'GradualPruningHook': 'magnitude'
    }
    assert torch.equal(
        loaded.state['GradualPruningHook']['pruned_values']['w'],
        torch.ones(3))
    assert loaded.is_pruned and loaded.slim_spec is None
    assert 'state' not in loaded.summary()  # no tensors in exported meta


def test_a_stage_without_state_drops_the_old_state():
    record = PruningRecord()
    record.set_stage('G', {}, state=dict(v=torch.zeros(1)))
    record.set_stage('G', {})
    assert 'G' not in record.state


def test_dense_checkpoint_has_an_empty_record():
    record = PruningRecord.from_checkpoint(dict(state_dict={}))
    assert not record.is_pruned and record.criteria() == {}


def test_layouts_of_earlier_versions_are_read_and_rewritten():
    """epsd_mm < 0.4 spread the record over three keys."""
    checkpoint = dict(
        meta={
            RECORD_KEY: {
                'EarlyPruningHook': {
                    'config': dict(criterion='snip')
                }
            },
            'epsd_slim_spec': SPEC
        },
        pruned_weight_values={'w': torch.zeros(2)})
    record = PruningRecord.from_checkpoint(checkpoint)
    assert record.criteria() == {'EarlyPruningHook': 'snip'}
    assert record.slim_spec == SPEC
    assert torch.equal(
        record.state['GradualPruningHook']['pruned_values']['w'],
        torch.zeros(2))
    record.write(checkpoint)  # one key afterwards
    assert 'pruned_weight_values' not in checkpoint
    assert set(checkpoint['meta']) == {RECORD_KEY}
    assert PruningRecord.from_checkpoint(checkpoint) == record


def test_a_record_of_a_newer_version_is_refused():
    checkpoint = dict(meta={
        RECORD_KEY: dict(format='epsd_mm.pruning_record', version=99)
    })
    with pytest.raises(ValueError, match='record version 99 is not supported'
                       '.* use the epsd_mm version that wrote'):
        PruningRecord.from_checkpoint(checkpoint)


def test_a_broken_slim_spec_is_refused():
    checkpoint = dict(meta={'epsd_slim_spec': dict(version=1)})
    with pytest.raises(ValueError, match='not a slim spec'):
        PruningRecord.from_checkpoint(checkpoint)


def test_to_plain_keeps_plain_values_and_reprs_the_rest():
    assert to_plain({1: (2, [3.0, None, 'x'])}) == {'1': [2, [3.0, None, 'x']]}
    assert to_plain(dict(t=torch.float32)) == {'t': 'torch.float32'}
