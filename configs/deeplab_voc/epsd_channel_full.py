# Whole-model structured EPSD: as epsd_channel.py, but the ASPP decode head
# and the FCN auxiliary head are cut too (on DeepLabV3 R50-D8 at 512x512 the
# heads hold ~63% of the FLOPs, so backbone-only pruning caps the speed-up).
# All channel groups of the three parts are ranked together by the same
# ProsPr meta-gradient of CE + DLB; the heads' class channels (conv_seg) are
# never cut: no layer reads them, so they are kept whole and named in the log.
# round_to=16: every channel group keeps a multiple of 16 channels, the block
# onnxruntime's CPU convolutions compute in on AVX-512 (a multiple of 8 for
# AVX2 and GPU tensor cores too), so the shipped file is as fast as its FLOPs.
_base_ = ['./epsd_channel.py']
default_hooks = dict(
    pruning=dict(
        scopes=('backbone', 'decode_head', 'auxiliary_head'), round_to=16))
