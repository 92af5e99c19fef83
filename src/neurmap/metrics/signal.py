"""Does a loss term push D the right way? The cosine between its gradient and the supervised loss's gradient.

NeurMAP's gain over supervised fine-tuning comes from D's terms on unpaired images (the reblur term and the
priors that pass through M). On images whose sharp version is known, the direction that would help D is the
gradient of the supervised loss ``||D(B) - S||^2`` with respect to D's parameters. A term whose gradient has a
positive cosine with it moves D towards the sharp image; a negative cosine moves D away, typically back towards
blur when M underestimates the blur length. The cosine ignores the terms' weights, so it reads the same under
any ``conf/loss`` preset.

The per-term cosines cannot show the direction D actually takes from the unpaired images: that is the gradient
of the terms' **weighted sum**, whose cosine (``combined``) also depends on the terms' weights and gradient norms.

The value is computed per image (or crop) and averaged over images by the caller: the mean of per-crop cosines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["gradient_cosines"]


def _flat_grad(value: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1).double() for g, p in zip(grads, params)]
    )


def gradient_cosines(
    reference: torch.Tensor,
    terms: Mapping[str, torch.Tensor],
    params: Sequence[torch.Tensor],
    combined: str | None = None,
) -> dict[str, torch.Tensor]:
    """Cosine between the gradient of each term and that of ``reference``, with respect to ``params``.

    No ``.grad`` is written (``torch.autograd.grad``), so it can run between optimizer steps or in validation.

    Args:
        reference: scalar loss whose descent direction is the right one (the supervised loss).
        terms: name -> scalar loss, each a function of ``params``.
        params: the parameters to differentiate (D's).
        combined: also the cosine of the sum of ``terms`` (weighted terms: the step's direction), under this name.

    Returns:
        name -> 0-d float tensor in [-1, 1]; 0 where either gradient vanishes.

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> loss = (w - 3).pow(2).sum()
        >>> cos = gradient_cosines(loss, {"same": 2 * loss, "away": -loss}, [w])
        >>> round(float(cos["same"]), 6), round(float(cos["away"]), 6)
        (1.0, -1.0)
    """
    params = list(params)
    ref = _flat_grad(reference, params)
    grads = {name: _flat_grad(value, params) for name, value in terms.items()}
    if combined is not None and grads:
        grads[combined] = torch.stack(list(grads.values())).sum(0)
    out = {}
    for name, grad in grads.items():
        denom = ref.norm() * grad.norm()
        out[name] = (ref @ grad / denom).float() if denom > 0 else ref.new_zeros((), dtype=torch.float32)
    return out
