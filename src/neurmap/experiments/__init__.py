"""Experiments built on the library: each is a pipeline of ``neurmap.train`` / ``neurmap.evaluate`` runs and a
report. :mod:`~neurmap.experiments.mini` is the CPU-scale reproduction (``make reproduce-mini``)."""
