"""Let MMEngine's ``pytorch`` launcher (torchrun) run on machines without CUDA.

MMEngine 0.10.7 cannot start a distributed run on a CPU-only machine:

* ``mmengine.dist.init_dist('pytorch')`` calls ``torch.cuda.set_device``
  before ``init_process_group``, which raises "Found no NVIDIA driver";
* ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to
  ``MMDistributedDataParallel``, which torch rejects for a CPU module.

The Runner skips its own ``init_dist`` when the process group already exists,
and takes ``device_ids`` from ``model_wrapper_cfg`` when given, so both are
fixed from the config side before the Runner is built. With CUDA available
nothing changes.

``close_distributed`` ends a run's process group before the interpreter exits.
"""
import os

import torch
import torch.distributed as torch_dist


def setup_cpu_distributed(cfg) -> bool:
    """Prepare a ``launcher='pytorch'`` config to run on CPU processes.

    When the launcher is ``'pytorch'`` and CUDA is unavailable, initialise the
    default process group from torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with the backend of
    ``env_cfg.dist_cfg`` (it must be a CPU backend such as ``'gloo'``), and
    set ``model_wrapper_cfg.device_ids = None`` so DDP wraps a CPU module
    (without a ``model_wrapper_cfg``, the other DDP arguments are those
    ``Runner.wrap_model`` would pass: ``broadcast_buffers=False`` and the
    config's ``find_unused_parameters``).

    Args:
        cfg (Config): The config, modified in place (``model_wrapper_cfg``).

    Returns:
        bool: Whether the CPU set-up was applied.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}) or {})
    backend = dist_cfg.pop('backend', 'gloo')
    if backend == 'nccl':
        raise RuntimeError(
            "env_cfg.dist_cfg.backend='nccl' needs CUDA, which is not "
            'available. Run on CPU with --cfg-options '
            'env_cfg.dist_cfg.backend=gloo')
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend=backend,
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **dist_cfg)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if not wrapper:
        # What Runner.wrap_model passes when there is no model_wrapper_cfg;
        # DDP's own default broadcast_buffers=True would overwrite every
        # rank's buffers with rank 0's at each forward.
        wrapper = dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True


def close_distributed() -> None:
    """Destroy the default process group, if any, once every rank is done.

    MMEngine never destroys the process group it runs in. Left to interpreter
    teardown, gloo's threads may still be joinable and a rank aborts after a
    successful run ("terminate called without an active exception", SIGABRT),
    which torchrun reports as a failed job. The barrier keeps a fast rank from
    tearing down while another one is still in its last collective.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
