"""Benchmarks: figures printed as Markdown tables with the machine they ran on (``make bench*``), never
asserted in tests.

* :mod:`~neurmap.benchmarks.iteration`: a NeurMAP iteration against a supervised one, and R (``make bench``);
* :mod:`~neurmap.benchmarks.backbones`: params, MACs, CPU time and peak memory per backbone;
* :mod:`~neurmap.benchmarks.data`: loader crops/s and blur-generator images/s;
* :mod:`~neurmap.benchmarks.evaluation`: metric images/s, deblur time and peak memory.
"""
