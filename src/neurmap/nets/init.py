"""Weight initialisation for M and N.

Paper §4.1: "All discriminators are initialized using Xavier, bias 0". The authors' ``init_net``
applies ``xavier_normal_`` with gain 1 to every conv / transposed conv / linear weight of M and N
(their config's ``init_gain: 0.02`` is never read).
"""

from __future__ import annotations

from torch import nn

__all__ = ["xavier_init_"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_LAYERS = (*_CONVS, nn.Linear)


def xavier_init_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Xavier-normal weights and zero biases for every conv, transposed conv and linear layer, in place.

    Weights get N(0, gain^2 * 2 / (fan_in + fan_out)); other layers (norms, activations) are untouched.

    Args:
        module: the network (or a single layer).
        gain: Xavier gain (1 in the authors' code).

    Returns:
        ``module`` itself, so the call can wrap a constructor.
    """
    if gain <= 0:
        raise ValueError(f"xavier_init_ gain must be > 0, got {gain}")
    for layer in module.modules():
        if isinstance(layer, _LAYERS):
            nn.init.xavier_normal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
