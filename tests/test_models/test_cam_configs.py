import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from epsd_mm.engine.hooks import EarlyPruningHook, SelfDistillHook
from epsd_mm.models.cam_localizer import CAMLocalizer

# Register the modules the configs name (until the package __init__s do).
import epsd_mm.datasets.cub  # noqa: F401,E402,I001
import epsd_mm.datasets.samplers  # noqa: F401,E402
import epsd_mm.evaluation  # noqa: F401,E402
import epsd_mm.models.cam_head  # noqa: F401,E402
import epsd_mm.visualization  # noqa: F401,E402

CONFIGS = osp.join(osp.dirname(__file__), '../../configs')
CSKD = dict(
    type='CSKD', loss=dict(type='CSKDLoss', temperature=4.0, loss_weight=3.0))
PAIRS = 'epsd_mm.ClassPairSampler'
PLAIN = 'DefaultSampler'
# config -> (model.sd, train sampler, pruning hook overrides or None)
EXPECTED = {
    'epsd_cam_cub.py': (CSKD, PAIRS, {}),
    'cam_cub/epsd_cskd.py': (CSKD, PAIRS, {}),
    'cam_cub/dense.py': (None, PLAIN, None),
    'cam_cub/dense_sd.py': (CSKD, PAIRS, None),
    'cam_cub/simple_combination.py': (CSKD, PAIRS, dict(loss='task')),
    'cam_cub/snip_sd.py': (CSKD, PAIRS, dict(criterion='snip',
                                             loss='task')),
    'cam_cub/random_sd.py': (CSKD, PAIRS, dict(criterion='random')),
    'cam_cub/epsd_dlb.py': (dict(
        type='DLB', loss=dict(type='DLBLoss', temperature=3.0,
                              loss_weight=1.0)), PLAIN, {}),
    'cam_cub/epsd_pskd.py': (dict(
        type='PSKD', loss=dict(type='PSKDLoss', alpha_T=0.8)), PLAIN, {}),
    'demo/epsd_cam_cub_demo.py': (CSKD, PAIRS, dict(num_batches=4)),
}
CHANNEL = dict(granularity='channel', sparsity=0.5, min_density=0.05)
EXPECTED.update({
    'cam_cub/epsd_channel.py': (CSKD, PAIRS, CHANNEL),
    'cam_cub/l1_channel.py': (CSKD, PAIRS, dict(CHANNEL,
                                                criterion='magnitude')),
    'cam_cub/random_channel.py': (CSKD, PAIRS, dict(CHANNEL,
                                                    criterion='random')),
    'cam_cub/simple_combination_channel.py': (CSKD, PAIRS,
                                              dict(CHANNEL, loss='task')),
    'demo/epsd_channel_cam_cub_demo.py': (CSKD, PAIRS,
                                          dict(CHANNEL, num_batches=4)),
})


def test_every_cub_config_is_covered():
    found = {
        osp.relpath(path, CONFIGS)
        for pattern in ('epsd_cam_cub.py', 'cam_cub/*.py', 'demo/*cub*.py')
        for path in glob.glob(osp.join(CONFIGS, pattern))
    }
    assert found == set(EXPECTED)


@pytest.mark.e2e
@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_config_builds(name, tmp_path):
    sd, sampler, pruning = EXPECTED[name]
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    assert cfg.model.get('sd') == sd
    assert cfg.train_dataloader.sampler.type == sampler
    # CS-KD pairs must not be split across batches.
    if sampler == PAIRS:
        assert cfg.train_dataloader.batch_size % 2 == 0
    hooks = cfg.default_hooks
    if pruning is None:
        assert 'pruning' not in hooks
    else:
        assert hooks.pruning == dict(type='epsd_mm.EarlyPruningHook',
                                     **pruning)
    assert hooks.self_distill.type == 'epsd_mm.SelfDistillHook'

    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    assert isinstance(runner.model, CAMLocalizer)
    hook_types = {type(hook) for hook in runner.hooks}
    assert (EarlyPruningHook in hook_types) == (pruning is not None)
    assert SelfDistillHook in hook_types
