"""The pruning core must stay framework-free."""
import ast
from pathlib import Path

import epsd_mm.pruning

FORBIDDEN = ('mmengine', 'mmcv', 'mmseg', 'mmdet', 'mmpretrain')


def test_pruning_imports_no_openmmlab_package():
    root = Path(epsd_mm.pruning.__file__).parent
    files = sorted(root.rglob('*.py'))
    assert len(files) > 5
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert module.split('.')[0] not in FORBIDDEN, (path, module)
                assert not module.startswith('epsd_mm'), (
                    f'{path} imports {module}; use relative imports inside '
                    'epsd_mm.pruning')


def test_public_api_is_exported():
    for name in epsd_mm.pruning.__all__:
        assert hasattr(epsd_mm.pruning, name), name
