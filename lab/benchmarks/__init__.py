"""Benchmarks: figures printed as Markdown tables with the machine they ran on (``make bench*``), never
asserted in tests.

* :mod:`~lab.benchmarks.iteration`: a NeurMAP iteration against a supervised one, and R (``make bench``);
* :mod:`~lab.benchmarks.backbones`: params, MACs, CPU time and peak memory per backbone;
* :mod:`~lab.benchmarks.data`: loader crops/s and blur-generator images/s;
* :mod:`~lab.benchmarks.evaluation`: metric images/s, deblur time and peak memory.
"""
