"""The lab: experiments, benchmarks and report generators built on neurmap, kept out of the installed package.

It drives neurmap through its commands (``python -m neurmap.train``, ``neurmap.evaluate``, ...) and public
functions, and runs from the repository root (``python -m lab.<module>``, or the Makefile targets):

* :mod:`~lab.reproduce_mini` and :mod:`~lab.mini`: the CPU-scale reproduction (``make reproduce-mini``);
* :mod:`~lab.curves`: the motion, length and weights curves of the mini reproduction's runs;
* :mod:`~lab.signal`: where NeurMAP's unpaired signal points before fine-tuning;
* :mod:`~lab.benchmarks`: timings printed with the machine (``make bench*``).
"""

from pathlib import Path

__all__ = ["ROOT"]

#: The repository root: the working folder of the ``python -m lab.*`` commands the lab starts itself.
ROOT = Path(__file__).resolve().parents[1]
