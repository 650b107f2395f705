"""The package's layers: what may import what (read from the sources)."""
import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

import epsd_mm

PACKAGE = Path(epsd_mm.__file__).parent
ROOT = PACKAGE.parent
OPENMMLAB = ('mmengine', 'mmcv', 'mmseg', 'mmdet', 'mmpretrain')
# package -> epsd_mm packages it must not import (lower layers never import
# higher ones; the core imports none)
FORBIDDEN = {
    'pruning': ('analysis', 'datasets', 'deploy', 'engine', 'evaluation',
                'losses', 'models', 'sd_methods', 'utils', 'visualization'),
    'deploy': ('analysis', 'engine'),
    # reads checkpoints like deploy; never runs a Runner
    'analysis': ('engine', ),
    'losses': ('engine', 'deploy'),
    'sd_methods': ('engine', 'deploy'),
    'models': ('engine', 'deploy'),
}


def _imports(path: Path) -> Iterator[Tuple[str, Tuple[str, ...]]]:
    """(absolute module, imported names) of every import in ``path``."""
    parts = path.relative_to(ROOT).with_suffix('').parts
    package = parts[:-1] if parts[-1] != '__init__' else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = '.'.join(base + ((node.module, ) if node.module
                                          else ()))
            else:
                module = node.module
            yield module, tuple(alias.name for alias in node.names)


def _files(sub: str):
    files = sorted((PACKAGE / sub).rglob('*.py'))
    assert files, sub
    return files


@pytest.mark.parametrize('package', sorted(FORBIDDEN))
def test_layers_import_downwards_only(package):
    banned = {f'epsd_mm.{name}' for name in FORBIDDEN[package]}
    for path in _files(package):
        for module, _ in _imports(path):
            top = '.'.join(module.split('.')[:2])
            assert top not in banned, (
                f'{path.relative_to(ROOT)} imports {module}: epsd_mm.'
                f'{package} must not depend on {top}')


def test_the_pruning_core_needs_no_openmmlab_package():
    for path in _files('pruning'):
        for module, _ in _imports(path):
            assert module.split('.')[0] not in OPENMMLAB, (path, module)


def test_the_harness_uses_public_api_only():
    """benchmarks/ imports names that epsd_mm packages export."""
    import importlib
    files = sorted((ROOT / 'benchmarks').glob('*.py'))
    assert files
    for path in files:
        for module, names in _imports(path):
            if not module.startswith('epsd_mm'):
                continue
            assert module.count('.') <= 1, (
                f'{path.name} imports the submodule {module}; import from '
                'its package')
            exported = getattr(importlib.import_module(module), '__all__',
                               None)
            for name in names:
                assert exported is not None and name in exported, (
                    f'{path.name} imports {module}.{name}, which is not in '
                    f"{module}'s __all__")


def test_pruning_imports_without_torch_pruning():
    """torch-pruning is an optional extra: only channel pruning needs it,
    and says how to install it."""
    code = (
        'import sys; sys.modules["torch_pruning"] = None\n'
        'import epsd_mm.pruning as p\n'
        'import torch.nn as nn\n'
        'p.WeightPruner(sparsity=0.5, criterion="magnitude", scopes="*")'
        '.prune(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))\n'
        'try:\n'
        '    p.channels.torch_pruning()\n'
        'except ImportError as error:\n'
        '    print(error)\n')
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    assert "pip install 'torch-pruning>=1.6'" in out
