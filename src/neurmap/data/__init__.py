"""Data: procedural images and motion flows, datasets, training augmentations and the DataModule."""
