from .demo_voc import write_voc_demo

__all__ = ['write_voc_demo']
