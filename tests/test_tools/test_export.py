"""tools/deploy/export.py on a checkpoint written by tools/train.py."""
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from epsd_mm.deploy import identical_state_dicts, load_sparse_checkpoint
from epsd_mm.pruning import (MASK_SUFFIX, attach_mask_buffers,
                             masked_param_names)
from epsd_mm.registry import MODELS

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e

TIMEOUT = 300
FILES = ('folded.pth', 'sparse.pth', 'deploy_config.py', 'model.onnx')


@pytest.fixture(scope='module')
def exported(tool_run, tmp_path_factory, helpers):
    """Export the shared tools/train.py run's checkpoint with --onnx;
    returns (config path, checkpoint, out dir, export stdout)."""
    out_dir = str(tmp_path_factory.mktemp('export_tool') / 'deploy')
    proc = helpers.run_python(
        osp.join(helpers.repo_root, 'tools', 'deploy', 'export.py'),
        tool_run.cfg_path,
        tool_run.checkpoint,
        '--out-dir',
        out_dir,
        '--onnx',
        cwd=osp.dirname(tool_run.cfg_path),
        timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return tool_run.cfg_path, tool_run.checkpoint, out_dir, proc.stdout


def _masked_model(cfg_path: str, checkpoint: str):
    """The trained model with its masks, as training left it."""
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(cfg_path)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    state = torch.load(checkpoint)['state_dict']
    attach_mask_buffers(model, masked_param_names(state))
    load_checkpoint(model, checkpoint, strict=True)
    return model.eval()


def test_export_tool_writes_and_checks(exported):
    _, _, out_dir, stdout = exported
    for name in FILES:
        assert osp.isfile(osp.join(out_dir, name)), name
    onnx_check = re.search(r'ONNX check .*max abs diff (\S+) .* OK', stdout)
    assert onnx_check and float(onnx_check.group(1)) <= 1e-4
    ratio = re.search(r'pruned tensors: .* \(([\d.]+)x\)', stdout)
    # bitmask + fp32 values at 80% (the shared run): 0.2 + 1/32 = 0.231
    assert float(ratio.group(1)) <= 0.2 + 1 / 32 + 0.005
    for name in ('folded.pth', 'sparse.pth', 'model.onnx'):
        assert re.search(rf'\| {re.escape(name)} +\| +[\d,.]+ \| +[\d.]+ \|',
                         stdout), name
    assert '(pruned by EarlyPruningHook: prospr)' in stdout


def test_folded_loads_into_mmseg_with_the_masked_logits(exported):
    from mmseg.apis import init_model
    cfg_path, checkpoint, out_dir, _ = exported
    folded = torch.load(osp.join(out_dir, 'folded.pth'))
    assert set(folded) == {'meta', 'state_dict'}
    assert not any(k.endswith(MASK_SUFFIX) for k in folded['state_dict'])
    assert identical_state_dicts(
        load_sparse_checkpoint(osp.join(out_dir, 'sparse.pth')),
        folded['state_dict'])
    model = init_model(
        osp.join(out_dir, 'deploy_config.py'),
        osp.join(out_dir, 'folded.pth'),
        device='cpu')
    inputs = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = model(inputs, mode='tensor')
        expected = _masked_model(cfg_path, checkpoint)(inputs, mode='tensor')
    assert (got - expected).abs().max() <= 1e-5

    import onnxruntime as ort
    session = ort.InferenceSession(
        osp.join(out_dir, 'model.onnx'), providers=['CPUExecutionProvider'])
    (onnx_out, ) = session.run(None, {'inputs': inputs.numpy()})
    assert np.abs(onnx_out - got.numpy()).max() <= 1e-4
