"""What the benchmark sections share: cached training runs, run in
parallel, and measurements in a fresh process."""
import json
import os
import os.path as osp
import shutil
import sys

import pytest

ROOT = (osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
sys.path.insert(0, ROOT)
from benchmarks import common  # noqa: E402


def test_train_cached_trains_once_and_records_collapse(tiny_cfg, tmp_path):
    cfg = tiny_cfg({'default_hooks.pruning.criterion': 'random'}, max_iters=2)
    work_dir = str(tmp_path / 'run')
    ledger = common.Ledger(str(tmp_path / 'results' / 'unit.jsonl'))
    outcome = common.train_cached(cfg, 0, work_dir, threads=1, ledger=ledger)
    assert not outcome.cached and not outcome.collapsed
    assert {'mIoU', 'aAcc', 'sparsity'} <= set(outcome.metrics)
    assert outcome.metrics['sparsity'] == pytest.approx(0.9, abs=1e-3)
    log_time = osp.getmtime(osp.join(work_dir, 'train.log'))
    again = common.train_cached(cfg, 0, work_dir, threads=1)
    assert again.cached and again.metrics == outcome.metrics
    assert osp.getmtime(osp.join(work_dir, 'train.log')) == log_time
    with open(osp.join(work_dir, 'result.json')) as f:
        digest = json.load(f)['config_sha1']
    record = ledger.get(digest)
    assert record['metrics'] == outcome.metrics
    assert record['work_dir'] == work_dir and record['commit']
    # Another machine: the work dir is gone, the committed ledger answers.
    shutil.rmtree(work_dir)
    from_ledger = common.train_cached(cfg, 0, work_dir, 1, ledger)
    assert from_ledger.cached and from_ledger.metrics == outcome.metrics
    assert not osp.exists(work_dir)

    # ~18 of ~175k backbone weights kept over ~20 layers: some layer is
    # left with none, so the hook stops the run -- a result, cached too.
    cfg.default_hooks.pruning.sparsity = 0.9999
    collapse_dir = str(tmp_path / 'collapse')
    collapsed = common.train_cached(cfg, 0, collapse_dir, threads=1)
    assert 'prunes every weight of' in collapsed.collapsed
    assert collapsed.metrics == {}
    # An outcome found only in the work dir is recorded in the ledger.
    assert common.train_cached(cfg, 0, collapse_dir, 1, ledger).cached
    with open(osp.join(collapse_dir, 'result.json')) as f:
        collapse_digest = json.load(f)['config_sha1']
    # The cache is keyed by the whole config (here: another sparsity).
    assert collapse_digest != digest
    assert ledger.get(collapse_digest)['collapsed'] == collapsed.collapsed


def test_ledger_merges_fields_one_line_per_run(tmp_path):
    path = str(tmp_path / 'section.jsonl')
    ledger = common.Ledger(path)
    ledger.record('a', metrics={'mIoU': 1.0}, collapsed='')
    ledger.record('b', metrics={}, collapsed='layer x')
    ledger.record('a', onnx={'fp32': {'mIoU': 1.0}})
    assert ledger.get('a') == dict(
        config_sha1='a', metrics={'mIoU': 1.0}, collapsed='',
        onnx={'fp32': {'mIoU': 1.0}})
    with open(path) as f:
        assert [json.loads(line)['config_sha1'] for line in f] == ['a', 'b']
    assert common.Ledger(path).get('c') is None
    nowhere = common.Ledger(None)
    nowhere.record('a', metrics={})
    assert nowhere.get('a') is None


@pytest.mark.parametrize('line', ['{"metrics": {}', '{"metrics": {}}', '[]'])
def test_ledger_names_a_bad_line_and_the_fix(tmp_path, line):
    path = tmp_path / 'section.jsonl'
    path.write_text('{"config_sha1": "a", "metrics": {}}\n\n' + line + '\n')
    ledger = common.Ledger(str(path))
    with pytest.raises(ValueError, match=r'line 3: not a run record.*'
                       r'git checkout -- .*delete the line'):
        ledger.get('a')
    with pytest.raises(ValueError, match='line 3'):
        ledger.record('b', metrics={})
    assert path.read_text().endswith(line + '\n')  # nothing rewritten


def test_train_all_runs_in_parallel_and_reports_every_failure(
        tiny_cfg, tmp_path, capsys):
    good = tiny_cfg({'default_hooks.pruning.criterion': 'random'},
                    max_iters=2)
    bad = tiny_cfg({'model.backbone.depth': 7})  # not a ResNet depth
    runs = [('good', good, 0, str(tmp_path / 'good')),
            ('bad', bad, 0, str(tmp_path / 'bad'))]
    with pytest.raises(RuntimeError, match='1 of 2 runs failed') as error:
        common.train_all(runs, jobs=2, threads=2, tag='unit')
    assert str(tmp_path / 'bad' / 'train.log') in str(error.value)
    assert not osp.exists(tmp_path / 'bad' / 'result.json')
    # the run that finished is cached: the same call resumes from it
    outcomes = common.train_all([runs[0]], 1, 1, 'unit')
    assert all(o.cached for o in outcomes)
    assert 'runs, 2 at a time, 1 threads each' in capsys.readouterr().out


def test_fixed_threads_of_a_config_are_reported():
    from mmengine.config import Config
    demo = Config(dict(env_cfg=dict(torch_num_threads=2)))
    runs = [('demo', demo, 0, 'a'), ('plain', Config(dict()), 0, 'b')]
    note = common.fixed_threads_note(runs, jobs=2, threads=2)
    assert 'torch_num_threads=2' in note and 'up to 4 threads' in note
    assert '--jobs 1' in note
    assert common.fixed_threads_note(runs, jobs=1, threads=2) == ''
    assert common.fixed_threads_note(runs[1:], jobs=2, threads=2) == ''


def test_in_fresh_process_returns_raises_and_restores_env(monkeypatch):
    monkeypatch.delenv('EPSD_BENCH_PROBE', raising=False)
    assert common.in_fresh_process(
        os.getenv, 'EPSD_BENCH_PROBE', env={'EPSD_BENCH_PROBE': 'x'}) == 'x'
    assert 'EPSD_BENCH_PROBE' not in os.environ
    assert common.in_fresh_process(os.getpid) != os.getpid()
    # the worker's error reaches the caller instead of a silent hang
    with pytest.raises(ValueError, match='invalid literal'):
        common.in_fresh_process(int, 'not a number')


def test_plan_runs_edits_copies_one_work_dir_per_method_and_seed():
    from mmengine.config import Config
    base = Config(dict(value=0))
    family = {'a + b': lambda cfg: None,
              'c': lambda cfg: cfg.update(value=1)}
    runs = common.plan_runs(base, family, [0, 1], 'unit')
    assert [name for name, *_ in runs] == [
        'a + b seed 0', 'a + b seed 1', 'c seed 0', 'c seed 1']
    assert [cfg.value for _, cfg, _, _ in runs] == [0, 0, 1, 1]
    assert base.value == 0
    assert runs[0][3] == osp.join(common.WORK_ROOT, 'unit', 'a___b', '0')
    assert len({work_dir for *_, work_dir in runs}) == 4
