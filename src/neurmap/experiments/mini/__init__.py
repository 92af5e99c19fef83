"""The mini reproduction: a CPU-scale check of NeurMAP's central claim (``python -m neurmap.reproduce_mini``).

Claim (paper Table 1, DMPHN row): fine-tuning a GoPro-trained deblurring network with NeurMAP on *unpaired*
data of a new blur family beats supervised fine-tuning on the paired data, on test images of that family
(+0.93 dB PSNR, LPIPS 0.236 -> 0.124 for DMPHN on kernel-synthesized blur).

Protocol (every number is a command-line option or a value of ``conf/experiment/mini_*.yaml``):

1. **Photographs.** Real photographs bundled with scikit-image (``skimage.data``; only the images shipped in
   the wheel, nothing is downloaded), split by *photograph*: the test photographs are never trained on.
   Grey photographs are replicated to RGB.
2. **Data** (deterministic by ``--seed``, cached in ``<work>/data`` and reused when its settings match):

   * ``paired/train/{input,target}``: random crops of the training photographs, each blurred by ONE
     spatially uniform linear blur (random angle, length in ``--paired-length`` px), the family the
     supervised data shows (the paper's GoPro stand-in);
   * ``kernel_synth/train``: *other* random crops of the training photographs, blurred by Gong et al.'s
     spatially varying camera-motion flows (``neurmap.synthesize``, ``--synth`` settings,
     Gong's "mild" ranges by default): the unpaired domains. As ``data=kernel_synth`` does, the blurry and
     the sharp side are drawn by independent samplers, and no loss sees the pairing;
   * ``kernel_synth/test``: fixed crops of the held-out photographs blurred by the same unseen family, with
     the ground-truth motion (``mfmap``).
3. **Start**: the released GoPro-trained DMPHN(1-2-4) (``--weights``, default ``$NEURMAP_DMPHN_WEIGHTS``).
   Without it, a DMPHN(1-2-4) is first trained from scratch,
   supervised, on the paired set (``experiment=mini_scratch``) and used instead; the report says so.
4. **Fine-tunes** from that start, all with the same iterations, batch sizes, crop and seed
   (``experiment=mini_neurmap``): ``variant=baseline`` (supervised only, paired data), ``neurmap``, and the
   ablations ``net1``, ``net2``, ``net3`` (paired + unpaired data), the oracle-motion ablation
   (``variant=oracle_motion``) and the ceiling (supervised on the test family's own pairs).
5. **Evaluation** of the start and of every fine-tune on the held-out test set with
   ``neurmap.evaluate data=kernel_synth``: PSNR, SSIM (torchmetrics, RGB), LPIPS (AlexNet), NIQE and, for
   networks with a motion estimator M, the motion-map error against the ground-truth flow. The blurry-input
   row is the evaluation's ``input_*`` columns; a last row gives the motion error of a zero motion map (an M
   that learned nothing).
6. **Report**: ``<out>/mini_reproduction.md`` with the commands, seeds, machine, wall time of every stage,
   the table and a discussion computed from the numbers (gains over the start, per-image paired
   differences, what M learned, distance to the paper's gains).

Execution (:mod:`.pipeline`): every stage is the command the report prints. The trainings are
``python -m neurmap.train`` runs; the fine-tunes are Hydra multiruns over ``variant`` with ``cluster=joblib``
(``--jobs`` processes, ``--threads`` torch threads each); the evaluations are one ``python -m neurmap.evaluate``
multirun; ``python -m neurmap.collect`` tabulates it. The report (:mod:`.report`) is the Jinja2 template
``report.md.j2`` filled from that table, the per-image files and the pure verdicts of :mod:`.verdicts`. With the
defaults the run takes about 20 minutes on the 2-core CPU of the README's benchmarks.

scikit-image is only needed by this command (``pip install scikit-image``, or the ``repro`` extra).
"""
