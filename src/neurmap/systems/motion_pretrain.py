"""Motion-estimator pretraining: train M alone on paired data before NeurMAP (``variant=motion_pretrain``).

NeurMAP's data term and its sharp-image prior reach D only through M, so an M that has not learned to read
blur gives D gradients through a random network. The authors pretrain M for their unpaired model (Motion-ETR's
offset net, ~210k iterations of GoPro reblurring); this stage does the same on the paired loader,
without building D or N::

    L = w_reblur * ||B - R(S, M(B))||^2 + w_sharp * |M(S)| + w_tv * TV(M(B))
        + w_flow * flow_supervision(M(B), motion_gt / alpha)

* the reblur term is Motion-ETR's objective: reblurring the *sharp* image along M(B) must give B;
* ``sharp``: M(S) -> 0 (the kernel prior's sharp part, eq. 5), so that M(B) - M(S_hat) in NeurMAP starts
  from a motion that vanishes on sharp images;
* ``tv``: TV of M(B) (eq. 6), smooth motion fields;
* ``flow`` (optional, weight 0 = off): direct, sign-invariant supervision against the ground-truth motion,
  where the paired data has it (the built-in pairs, ``kernel_synth`` records with ``with_motion: true``, or
  any ``neurmap.synthesize`` output made from your own sharp photos). A batch without ``motion`` while the
  weight is non-zero stops the run with one line.

The reblur loss is even in m (zero gradient at m = 0) and flat regions carry no motion information, which
is why the direct supervision helps where ground truth exists. Validation logs ``val/<set>/motion_epe``
(full blur length, px) beside ``val/<set>/motion_epe_zero`` (a zero map: an M that learned nothing) on every
val set with ground-truth motion, and the checkpoint keeps the best EPE. NeurMAP then starts from it with
``model.motion_pretrained=<run>/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio

from neurmap.losses import terms
from neurmap.losses.objectives import MotionPretrainWeights, from_mapping
from neurmap.metrics.motion import motion_epe
from neurmap.nets.init import xavier_init_
from neurmap.nets.reblur import canonicalize_motion
from neurmap.systems.base import ManualSystem

__all__ = ["MotionPretrainSystem"]


class MotionPretrainSystem(ManualSystem):
    """Trains the motion network M alone on paired batches (``{"paired": {"blur", "sharp", "motion"?}}``).

    Args:
        motion: M and its optimizer (``model.motion``): ``net`` (:class:`~neurmap.nets.motion.MotionNet`),
            ``optimizer`` (a factory taking parameters) and ``grad_clip`` (max global grad-norm, or None).
        reblur: R (:class:`~neurmap.nets.reblur.Reblur`); its ``alpha`` converts px to motion units.
        weights: ``reblur``, ``sharp``, ``tv``, ``flow`` (0 = no direct supervision) and ``flow_norm``
            (``epe`` or ``mse``), from ``conf/model/motion_pretrain.yaml``.
        iterations: training length; the learning rate decays linearly to 0 over it.
        init_gain: Xavier gain of M's initialisation.
        check_finite: stop with a clear error when the loss becomes NaN/inf.
        deblur: must stay None: no D is built (``variant=motion_pretrain`` sets ``backbone=null``); a
            backbone chosen on the command line is refused rather than silently left untrained.
    """

    def __init__(
        self,
        motion: Mapping[str, Any],
        reblur: nn.Module,
        weights: Mapping[str, Any],
        iterations: int,
        init_gain: float = 1.0,
        check_finite: bool = True,
        deblur: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if deblur is not None:
            raise ValueError(
                f"motion pretraining trains M alone, but backbone={deblur.get('name')} puts a D at model.deblur; "
                "leave backbone= out, or remove it with ~backbone"
            )
        w = from_mapping(MotionPretrainWeights, weights, "model.weights")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.automatic_optimization = False
        self.weights = w
        if not (w.reblur or w.sharp or w.tv or w.flow):
            raise ValueError("model.weights: every weight is 0, nothing would train M")
        self.iterations = int(iterations)
        self.check_finite = bool(check_finite)
        self.motion_net = xavier_init_(motion["net"], init_gain)
        self.reblur = reblur
        self.opt_names = ["motion"]
        self._check_optim({"motion": motion})
        self.save_hyperparameters(
            {"weights": dataclasses.asdict(w), "iterations": self.iterations, "variant": {"name": "motion_pretrain"}}
        )

    def networks(self) -> dict[str, nn.Module]:
        return {"motion": self.motion_net}

    def monitor(self, set_name: str) -> tuple[str, str]:
        return f"val/{set_name}/motion_epe", "min"

    def motion(self, images: torch.Tensor) -> torch.Tensor:
        """Canonical motion map M(images), (B, 2, H, W) in normalised units."""
        return canonicalize_motion(self.motion_net(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.motion(images)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        paired = batch.get("paired")
        if paired is None:
            raise KeyError("motion pretraining needs the paired loader (variant.paired: true)")
        logs = self._step("motion", self._named_optimizers()["motion"], self._loss, paired)
        self._step_schedulers(logs)
        n = paired["blur"].shape[0]
        self.log("train/motion/total", logs.pop("train/motion/total"), prog_bar=True, on_step=True, batch_size=n)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)

    def _loss(self, paired: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = self.weights
        blur, sharp = paired["blur"], paired["sharp"]
        motion = self.motion(torch.cat([blur, sharp]))  # no normalisation in M: one pass for both
        m_blur, m_sharp = motion[: blur.shape[0]], motion[blur.shape[0] :]
        parts: dict[str, torch.Tensor] = {}
        if w.reblur:
            parts["reblur"] = w.reblur * terms.reblur_loss(self.reblur(sharp, m_blur), blur)
        if w.sharp:
            parts["kernel_sharp"] = w.sharp * terms.kernel_sharp(m_sharp)
        if w.tv:
            parts["tv"] = w.tv * terms.total_variation(m_blur)
        if w.flow:
            if "motion" not in paired:
                raise KeyError(
                    "model.weights.flow > 0 needs ground-truth motion in the paired batches, but they have none "
                    "(keys: " + ", ".join(sorted(paired)) + "); use data with motion (built-in pairs, kernel_synth "
                    "with_motion: true) or set model.weights.flow=0"
                )
            target = paired["motion"].to(m_blur) / self.reblur.alpha
            parts["flow"] = w.flow * terms.flow_supervision(m_blur, target, w.flow_norm)
        return parts

    def _eval_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int) -> dict[str, torch.Tensor]:
        blur = batch["blur"]
        m_blur = self.motion(blur)
        out: dict[str, torch.Tensor] = {}
        if "sharp" in batch:
            reblurred = self.reblur(batch["sharp"], m_blur).clamp(0, 1)
            out["reblur_psnr"] = peak_signal_noise_ratio(
                reblurred, blur, data_range=1.0, reduction="none", dim=(1, 2, 3)
            )
        if "motion" in batch:
            out["motion_epe"] = motion_epe(m_blur * self.reblur.alpha, batch["motion"]).float()
            out["motion_epe_zero"] = motion_epe(torch.zeros_like(batch["motion"]), batch["motion"]).float()
        self._log_eval(stage, dataloader_idx, out, blur.shape[0])
        return out

    @torch.no_grad()
    def image_panels(self, batch: Mapping[str, Any], max_images: int = 4) -> dict[str, torch.Tensor]:
        """Blurry input, R(S, M(B)) where S exists, and M(B) beside the ground truth in flow colours."""
        from neurmap.utils.flow_vis import flow_panels

        blur = batch["blur"][:max_images]
        motion = self.motion(blur)
        panels = {"blurry": blur}
        if "sharp" in batch:
            panels["reblurred"] = self.reblur(batch["sharp"][:max_images], motion).clamp(0, 1)
        flows = {"motion": motion * self.reblur.alpha}
        if "motion" in batch:
            flows["motion_gt"] = batch["motion"][:max_images]
        return panels | flow_panels(flows)
