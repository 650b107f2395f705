"""setup_cpu_distributed: MMEngine's pytorch launcher without CUDA;
close_distributed: the process group ends before the interpreter does."""
import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from epsd_mm.utils import close_distributed, setup_cpu_distributed

# Runners, subprocesses or torchrun: the integrations, run end to end
pytestmark = pytest.mark.e2e


@pytest.fixture
def torchrun_env(monkeypatch, helpers):
    """The environment torchrun gives a single process."""
    for key, value in dict(
            RANK='0',
            LOCAL_RANK='0',
            WORLD_SIZE='1',
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT=str(helpers.free_port())).items():
        monkeypatch.setenv(key, value)
    yield
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def _cfg(**kwargs):
    return Config(
        dict(
            launcher='pytorch',
            env_cfg=dict(dist_cfg=dict(backend='gloo')),
            **kwargs))


def test_no_launcher_is_left_alone():
    cfg = Config(dict(launcher='none'))
    assert setup_cpu_distributed(cfg) is False
    assert 'model_wrapper_cfg' not in cfg
    assert not torch_dist.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_inits_gloo_and_cpu_ddp_arguments(torchrun_env):
    cfg = _cfg(find_unused_parameters=True)
    assert setup_cpu_distributed(cfg) is True
    assert torch_dist.is_initialized()
    assert torch_dist.get_backend() == 'gloo'
    assert torch_dist.get_world_size() == 1
    # the arguments Runner.wrap_model would pass, except device_ids
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=True,
        device_ids=None)
    # and the wrapper it describes really wraps a CPU model
    from mmengine.model import BaseModel
    from mmengine.registry import MODEL_WRAPPERS

    class Tiny(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, x, mode='tensor'):
            return self.fc(x)

    ddp = MODEL_WRAPPERS.build(cfg.model_wrapper_cfg,
                               default_args=dict(module=Tiny()))
    ddp(torch.ones(3, 2)).sum().backward()
    assert ddp.module.fc.weight.grad is not None
    # a second call reuses the process group
    assert setup_cpu_distributed(_cfg()) is True


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_user_wrapper_cfg_is_kept(torchrun_env):
    cfg = _cfg(
        model_wrapper_cfg=dict(
            type='MMDistributedDataParallel', find_unused_parameters=True))
    setup_cpu_distributed(cfg)
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        find_unused_parameters=True,
        device_ids=None)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_nccl_without_cuda_is_a_clear_error(torchrun_env):
    cfg = Config(
        dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    with pytest.raises(RuntimeError, match='backend=gloo'):
        setup_cpu_distributed(cfg)
    assert not torch_dist.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_close_distributed_destroys_the_process_group(torchrun_env):
    setup_cpu_distributed(_cfg())
    assert torch_dist.is_initialized()
    close_distributed()
    assert not torch_dist.is_initialized()
    # a run without a process group (launcher none) closes nothing
    close_distributed()
    assert not torch_dist.is_initialized()
