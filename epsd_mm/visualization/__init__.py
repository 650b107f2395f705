from .cam_visualizer import CAMVisualizer

__all__ = ['CAMVisualizer']
