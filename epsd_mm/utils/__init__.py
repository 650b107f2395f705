from .checkpoint import register_checkpoint_safe_globals
from .dist import close_distributed, setup_cpu_distributed
from .setup_env import register_all_modules

__all__ = [
    'register_all_modules', 'register_checkpoint_safe_globals',
    'setup_cpu_distributed', 'close_distributed'
]
