"""Training side: official targets, losses, augmentation, COCO loading and the trainer.

- ``targets`` (numpy): ``cornernet_targets``, ``saccade_targets``, ``gaussian_radius``, ...
- ``augment`` (numpy/OpenCV): ``augment_cornernet``, ``augment_saccade``, ``AugmentConfig``
- ``losses`` (torch): ``CornerNetLoss``, ``focal_loss``, ``ae_loss``, ``off_loss``, ``collate_targets``
- ``dataset``: ``CocoDataset``; ``trainer``: ``TrainConfig``, ``train``

Submodules are imported explicitly so that the numpy-only parts never pull in torch.
"""
