"""Lightning callbacks: image panels for every logger, a cross-rank weight check for DDP, and a
checkpoint on SIGTERM / Ctrl+C."""

from neurmap.callbacks.consistency import RankConsistencyCheck
from neurmap.callbacks.images import ImagePanelLogger
from neurmap.callbacks.interrupt import LastCheckpoint

__all__ = ["ImagePanelLogger", "LastCheckpoint", "RankConsistencyCheck"]
