"""What tools/train.py and tools/test.py do before building the Runner."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from epsd_mm.utils.launch import set_torch_num_threads

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_torch_threads_fixed_by_the_config(restore_threads, monkeypatch,
                                           caplog):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    torch.set_num_threads(1)
    cfg = Config(dict(env_cfg=dict(torch_num_threads=2)))
    logger = MMLogger.get_current_instance()  # print_log's 'current'
    logger.addHandler(caplog.handler)
    try:
        assert set_torch_num_threads(cfg) == 2
    finally:
        logger.removeHandler(caplog.handler)
    assert torch.get_num_threads() == 2
    # the environment asked otherwise: said so, with the way to follow it
    assert 'OMP_NUM_THREADS=1' in caplog.text
    assert 'env_cfg.torch_num_threads=None' in caplog.text


def test_torch_threads_untouched_without_the_key(restore_threads):
    torch.set_num_threads(1)
    for cfg in (Config(dict()), Config(dict(env_cfg=dict(
            torch_num_threads=None)))):
        assert set_torch_num_threads(cfg) is None
        assert torch.get_num_threads() == 1


@pytest.mark.parametrize('value', [0, -2, 1.5, '2', True])
def test_torch_threads_must_be_a_positive_int(value):
    cfg = Config(dict(env_cfg=dict(torch_num_threads=value)))
    with pytest.raises(ValueError, match='not a positive integer'):
        set_torch_num_threads(cfg)


def test_demo_configs_fix_the_threads():
    """Every demo promises a number; each fixes the threads like the seed."""
    demos = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'demo', '*.py')))
    assert demos
    for path in demos:
        cfg = Config.fromfile(path)
        assert cfg.env_cfg.get('torch_num_threads') == 2, path
        assert cfg.randomness.seed == 0, path
