"""Loading: image I/O, dataset layouts on disk, datasets, training augmentations and the DataModule that
interleaves paired and unpaired loaders. What generates data lives in :mod:`neurmap.synth`."""
