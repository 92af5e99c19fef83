"""What the commands do, as library functions: one module per command, apart from the thin entry points.

* :mod:`~neurmap.tasks.training`: ``train(cfg)`` behind ``python -m neurmap.train``;
* :mod:`~neurmap.tasks.evaluation`: ``evaluate(cfg)`` behind ``neurmap.evaluate``;
* :mod:`~neurmap.tasks.deblurring`: ``deblur(...)`` behind ``neurmap.deblur``;
* :mod:`~neurmap.tasks.exporting`: ``export_checkpoint(...)`` behind ``neurmap.export``;
* :mod:`~neurmap.tasks.inference`: loading D and M from a checkpoint and tiled inference, shared by the three
  above.

The entry points (``neurmap/<command>.py``) only parse the command line, call one of these and turn a user
error into one line.
"""
