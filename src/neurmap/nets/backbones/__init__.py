"""Deblurring backbones D: one file per network, all behind :class:`DeblurNet`."""

from neurmap.nets.backbones.base import DeblurNet
from neurmap.nets.backbones.weights import load_pretrained

__all__ = ["DeblurNet", "load_pretrained"]
