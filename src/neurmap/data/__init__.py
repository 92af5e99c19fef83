"""Data: procedural images and motion flows, datasets, training augmentations, the DataModule and the blur
generator (:mod:`neurmap.data.synthesis`)."""
