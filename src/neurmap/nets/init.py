"""Weight initialisation (paper §4.1: "All discriminators are initialized using Xavier, bias 0")."""

from __future__ import annotations

from torch import nn

__all__ = ["xavier_init_"]


def xavier_init_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Xavier-normal weights and zero biases for every conv, transposed conv and linear layer.

    The authors' ``init_weights`` uses gain 1 (their config's 0.02 is never read). Returns ``module``.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
