"""Lightning callbacks: image panels for every logger, a cross-rank weight check for DDP, and a
checkpoint on SIGTERM / Ctrl+C, a progress bar in iterations."""

from neurmap.callbacks.consistency import RankConsistencyCheck
from neurmap.callbacks.images import ImagePanelLogger
from neurmap.callbacks.interrupt import LastCheckpoint
from neurmap.callbacks.progress import IterationProgressBar

__all__ = ["ImagePanelLogger", "IterationProgressBar", "LastCheckpoint", "RankConsistencyCheck"]
