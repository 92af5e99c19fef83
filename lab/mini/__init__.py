"""The mini reproduction: a CPU-scale check of NeurMAP's central claim (``python -m lab.reproduce_mini``,
settings in ``conf/reproduce_mini.yaml``).

Claim (paper Table 1, DMPHN row): fine-tuning a GoPro-trained deblurring network with NeurMAP on *unpaired* data
of a new blur family beats supervised fine-tuning on the paired data, on test images of that family.

Protocol: photographs bundled with scikit-image, split by photograph (:mod:`.data`); a paired set under one
uniform linear blur per crop (the supervised family), an unpaired set and a held-out test set under Gong et al.'s
camera-motion blur (the unseen family, with its true motion). From the released DMPHN(1-2-4) (``weights``; without
it a from-scratch start), the supervised fine-tune, NeurMAP, Net1-Net3, the oracle-motion ablation and the ceiling
(supervised on the test family's own pairs) run with the same iterations, batches, crops and seed, as the
commands of :mod:`.run`; ``neurmap.evaluate`` scores them on the test set and :mod:`.report` writes
``<out>/<report_name>.md`` with every command, the machine, the tables and per-image paired differences.
scikit-image is only needed here (the ``repro`` extra).
"""
