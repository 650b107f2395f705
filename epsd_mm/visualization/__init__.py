from epsd_mm.registry import import_task_module

__all__ = []

if import_task_module(
        'epsd_mm.visualization.cam_visualizer', requires='mmdet'):
    from .cam_visualizer import CAMVisualizer
    __all__ += ['CAMVisualizer']
