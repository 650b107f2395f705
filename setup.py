"""Install epsd_mm: Early Pruning with Self-Distillation for OpenMMLab."""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
#: Shipped as MIM package data, so that MMEngine resolves configs inherited
#: as ``epsd_mm::epsd_deeplab_voc.py`` (it reads ``<pkg>/.mim/configs``).
MIM_FILES = ('configs', 'model-index.yml')


def get_version() -> str:
    """The version, read from epsd_mm/version.py (its one source)."""
    scope: dict = {}
    with open(osp.join(ROOT, 'epsd_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def readme() -> str:
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


def add_mim_extension() -> None:
    """Put the configs under epsd_mm/.mim: symlinks for an editable install
    (edits to configs/ show at once), copies for a wheel or sdist."""
    if {'develop', 'editable_wheel'} & set(sys.argv):
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'install'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    mim = osp.join(ROOT, 'epsd_mm', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in MIM_FILES:
        target = osp.join(mim, name)
        if osp.islink(target) or osp.isfile(target):
            os.remove(target)
        elif osp.isdir(target):
            shutil.rmtree(target)
        if mode == 'symlink':
            os.symlink(osp.relpath(osp.join(ROOT, name), mim), target)
        elif osp.isdir(osp.join(ROOT, name)):
            shutil.copytree(osp.join(ROOT, name), target)
        else:
            shutil.copyfile(osp.join(ROOT, name), target)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='epsd_mm',
        version=get_version(),
        description='Early Pruning with Self-Distillation (EPSD) for '
        'MMEngine, mmsegmentation, mmdetection and mmpretrain',
        long_description=readme(),
        long_description_content_type='text/markdown',
        packages=find_packages(exclude=('tests', 'tests.*', 'configs',
                                        'tools')),
        include_package_data=True,
        package_data={'epsd_mm': ['.mim/model-index.yml',
                                  '.mim/configs/**/*.py']},
        python_requires='>=3.9',
        # Lower bounds of what epsd_mm itself imports. The exact, tested
        # versions are pinned in requirements.txt, which tools/setup_env.sh
        # installs (mmcv needs a source build with ops there).
        install_requires=[
            'torch>=2.5',  # weights_only loading with (obj, name) safe globals
            'numpy>=1.23',
            'mmengine>=0.10.0,<1.0',
            'mmcv>=2.0.0,<2.2.0',
            'opencv-python>=4.5',
            'matplotlib>=3.5',
        ],
        extras_require={
            # the task libraries: each enables the components that need it
            'seg': ['mmsegmentation>=1.2.0,<1.3', 'ftfy', 'regex'],
            'det': ['mmdet>=3.3.0,<3.4'],
            'cls': ['mmpretrain>=1.2.0,<1.3'],
            'structured': ['torch-pruning>=1.6'],
            'deploy': ['onnx>=1.16', 'onnxscript', 'onnxruntime>=1.18'],
            'tests': ['pytest', 'tensorboard'],
        },
        license='Apache License 2.0',
        zip_safe=False,
    )
