"""Lightning callbacks: image panels for every logger, and a cross-rank weight check for DDP."""

from neurmap.callbacks.consistency import RankConsistencyCheck
from neurmap.callbacks.images import ImagePanelLogger

__all__ = ["ImagePanelLogger", "RankConsistencyCheck"]
