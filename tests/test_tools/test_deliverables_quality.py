"""The deliverables_quality benchmark section: its family of runs and the
ONNX metrics it keeps in the ledger."""
import os.path as osp
import sys

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks import common, deliverables_quality  # noqa: E402


def demo_cfg() -> Config:
    return Config.fromfile(osp.join(ROOT, deliverables_quality.CONFIG))


def test_family_edits_dense_whole_model_and_backbone_only():
    edits = deliverables_quality.family([0.3, 0.7])
    assert list(edits) == [
        'dense', 'whole-model slim 30%', 'whole-model slim 70%',
        'backbone-only slim 30%', 'backbone-only slim 70%'
    ]
    configs = {}
    for name, edit in edits.items():
        cfg = demo_cfg()
        edit(cfg)
        configs[name] = cfg
    assert 'pruning' not in configs['dense'].default_hooks
    whole = configs['whole-model slim 70%'].default_hooks.pruning
    assert whole.sparsity == 0.7
    assert tuple(whole.scopes) == deliverables_quality.WHOLE
    backbone = configs['backbone-only slim 30%'].default_hooks.pruning
    assert backbone.sparsity == 0.3
    assert 'scopes' not in backbone  # the hook's default: the backbone
    only_whole = deliverables_quality.family([0.5], ['whole-model'])
    assert list(only_whole) == ['dense', 'whole-model slim 50%']


def test_onnx_metrics_recorded_in_the_ledger_are_not_measured_again(
        tmp_path):
    cfg = demo_cfg()
    work_dir = str(tmp_path / 'run')  # no checkpoint, nothing to export
    ledger = common.Ledger(str(tmp_path / 'deliverables_quality.jsonl'))
    _, digest = common.run_config(cfg, 3, work_dir)
    onnx = {'fp32': {'mIoU': 60.0}, 'int8': {'mIoU': 59.5}}
    ledger.record(digest, metrics={'mIoU': 60.1}, collapsed='', onnx=onnx)
    assert deliverables_quality.deliverable_metrics(cfg, 3, work_dir, 1,
                                                    ledger) == onnx
    assert not osp.exists(work_dir)
    # the key is the whole run: another seed is another run
    assert common.run_config(cfg, 4, work_dir)[1] != digest
