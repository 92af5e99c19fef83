"""LightningModules: they orchestrate the plain networks of :mod:`neurmap.nets` with the objectives of
:mod:`neurmap.losses`.

* :class:`~neurmap.systems.neurmap.NeurMAPSystem`: D, M and N with three optimizers (``model=neurmap``);
* :class:`~neurmap.systems.motion_pretrain.MotionPretrainSystem`: M alone (``variant=motion_pretrain``);
* :class:`~neurmap.systems.base.ManualSystem`: what both share (manual optimization, LR decay, logging).
"""
