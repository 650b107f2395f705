# EPSD with DLB (the main configuration, configs/epsd_deeplab_voc.py), under
# the name other configs inherit it by: MMEngine resolves package configs
# only as `epsd_mm::<folder>/<file>.py`, e.g.
#   _base_ = ['epsd_mm::deeplab_voc/epsd_dlb.py']
_base_ = ['../epsd_deeplab_voc.py']
