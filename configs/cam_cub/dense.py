# Dense ResNet-50 CAM, plain cross-entropy, ordinary shuffled batches of 32.
_base_ = ['../_base_/cam_r50_cub_sd.py']
model = dict(sd=None)
train_dataloader = dict(
    batch_size=32,
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
