"""Install epsd_mm: Early Pruning with Self-Distillation for OpenMMLab."""
from setuptools import find_packages, setup


def readme() -> str:
    with open('README.md', encoding='utf-8') as f:
        return f.read()


setup(
    name='epsd_mm',
    version='0.1.0',
    description='Early Pruning with Self-Distillation (EPSD) for MMEngine, '
    'mmsegmentation and mmdetection',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.9',
    # Versions are pinned in requirements.txt; tools/setup_env.sh installs them
    # (mmcv needs a source build with ops, which pip alone cannot express).
    install_requires=[
        'torch>=2.1',
        'mmengine>=0.10.0,<1.0',
        'mmcv>=2.0.0,<2.2.0',
        'mmsegmentation>=1.2.0,<1.3',
        'mmdet>=3.3.0,<3.4',
        'ftfy',
        'regex',
        'matplotlib',
        'rich',
    ],
    license='Apache License 2.0',
    zip_safe=False,
)
