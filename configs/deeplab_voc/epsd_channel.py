# Structured EPSD: remove 50% of the backbone's channels before training,
# scored by the ProsPr meta-gradient (3 SGD steps) of CE + DLB, then train the
# slim network with DLB. Channels are removed for real (torch-pruning
# surgery); the heads only adapt their input channels, and the checkpoints
# record the slim architecture (resume, load_from and tools/test.py rebuild
# it). Channels are ranked globally; every channel group keeps at least 5%
# of its channels (min_density), so no layer can be emptied.
_base_ = ['../epsd_deeplab_voc.py']
default_hooks = dict(
    pruning=dict(granularity='channel', sparsity=0.5, min_density=0.05))
