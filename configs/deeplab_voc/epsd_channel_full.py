# Whole-model structured EPSD: as epsd_channel.py, but the ASPP decode head
# and the FCN auxiliary head are cut too (on DeepLabV3 R50-D8 at 512x512 the
# heads hold ~63% of the FLOPs, so backbone-only pruning caps the speed-up).
# All channel groups of the three parts are ranked together by the same
# ProsPr meta-gradient of CE + DLB; the heads' class channels (conv_seg) are
# never cut: no layer reads them, so they are kept whole and named in the log.
_base_ = ['./epsd_channel.py']
default_hooks = dict(
    pruning=dict(scopes=('backbone', 'decode_head', 'auxiliary_head')))
