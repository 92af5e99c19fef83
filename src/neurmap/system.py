"""NeurMAPSystem: the LightningModule that trains D, M and N with three optimizers.

One iteration (paper §3.3, the authors' ``optimize``):

1. ``S_hat = D(B)`` once, for every blurry image of the batch (paired and unpaired);
2. **M step** (eq. 10): reblur data term + kernel priors + TV of the relative motion, on ``S_hat.detach()``;
3. **N step** (eq. 12): LSGAN, fake ``S_hat.detach()`` -> 0, real natural images {B, S} -> 1;
4. **D step** (eq. 11): content loss on paired data, and on unpaired data the reblur term,
   sharp-image prior, natural-image prior and TV of M(S_hat), through the just-updated M and N.

Each step runs inside ``toggled_optimizer`` so only its own network receives gradients, and each
network changes only through its own optimizer. The paper's ablations (Table 3) switch parts off
through ``variant``; every weight comes from ``conf/loss``.

Beyond the paper: M can start from a motion-pretraining run (``motion_pretrained``, see
:mod:`neurmap.motion_pretrain`), D can be kept on the content loss alone for the first
``warmup_iterations`` while M and N train, and on the logging steps the share of each D term in D's
gradient norm is logged (``train/deblur/grad_norm/<term>``, ``train/deblur/grad_share/<term>``).

Choices where the paper and the authors' code differ are documented in README ("Faithfulness").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from neurmap.losses import terms
from neurmap.losses.pool import MotionPool
from neurmap.metrics.motion import motion_epe
from neurmap.nets.init import xavier_init_
from neurmap.nets.motion import load_motion_pretrained
from neurmap.nets.reblur import canonicalize_motion
from neurmap.systems_base import ManualSystem, linear_decay

__all__ = ["NeurMAPSystem", "linear_decay"]

_DISC_MODES = ("natural", "sharp", "none")
_LOSS_KEYS = (
    "alpha",
    "reblur_motion",
    "reblur_deblur",
    "reblur_msssim_ratio",
    "content",
    "content_norm",
    "kernel_blurry",
    "kernel_blurry_target",
    "kernel_sharp",
    "kernel_deblurred",
    "kernel_hinge",
    "motion_tv",
    "sharp_prior",
    "sharp_prior_norm",
    "natural",
    "deblurred_motion_tv",
    "image_tv",
    "map_on_paired",
)
_VARIANT_KEYS = ("name", "motion", "discriminator", "disc_fake_blurry", "paired", "unpaired")


def _require(mapping: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ValueError(f"{where} is missing keys {missing}; expected all of {list(keys)}")


def grad_norms(parts: Mapping[str, torch.Tensor], params: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The norm of each term's gradient with respect to ``params`` (the graph is kept for the real backward)."""
    norms = {}
    for name, value in parts.items():
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        norms[name] = torch.stack(squares).sum().sqrt() if squares else value.new_zeros(())
    return norms


class NeurMAPSystem(ManualSystem):
    """Orchestrates the deblurring network D, motion network M and discriminator N.

    Args:
        deblur_net: D, a :class:`~neurmap.nets.backbones.DeblurNet` ([0,1] images in and out).
        motion_net: M, returns (B, 2, H, W) motion in normalised units; dropped when
            ``variant.motion`` is false.
        discriminator: N, returns a list of per-scale logit maps; dropped when
            ``variant.discriminator == "none"``.
        reblur: R, parameter-free (:class:`~neurmap.nets.reblur.Reblur`).
        loss: the weights of ``conf/loss`` (keys listed in ``_LOSS_KEYS``).
        variant: ``conf/variant``: which parts of NeurMAP are on (Table 3 ablations).
        optim: per network (``deblur``, ``motion``, ``disc``) a mapping with ``optimizer`` (a
            factory taking parameters, e.g. a Hydra ``_partial_`` Adam) and ``grad_clip``
            (max global grad-norm, or None).
        iterations: training length in iterations (one batch = one iteration, whatever the number
            of optimizers); learning rates decay linearly to 0 over it.
        relative_motion: reblur with M_rel = M(B) - M(S_hat) (default, as the authors' code), or
            with the absolute M(B).
        pool_size: samples in the running pool behind E[|M(S)|].
        init_gain: Xavier gain for M and N (paper §4.1).
        check_finite: stop with a clear error when a loss becomes NaN/inf.
        content_stage_weights: content-loss weights of a multi-output backbone's outputs, aligned
            with the LAST outputs (final last): ``[1.0]`` supervises the final image only, ``[1, 1, 1]``
            every stage of MPRNet / every scale of MIMO-UNet (targets are area-resized).
        channels_last: NHWC memory format for the networks and images (faster convolutions on
            recent GPUs with mixed precision).
        compile: ``torch.compile`` options for D (e.g. ``{"mode": "max-autotune"}``); None = eager.
            D is compiled in place, so checkpoint keys do not change. R always runs eagerly in fp32.
        motion_pretrained: a checkpoint of ``variant=motion_pretrain`` (or any file holding M's state dict)
            to start M from, instead of Xavier init; None = from scratch (the paper).
        warmup_iterations: for the first K iterations D trains on the content loss only (its MAP terms are
            off) while M and N train as usual; 0 = off (the paper).
        log_grad_norms: on logging steps, log each D term's gradient norm and its share of their sum.
    """

    def __init__(
        self,
        deblur_net: nn.Module,
        motion_net: nn.Module | None,
        discriminator: nn.Module | None,
        reblur: nn.Module,
        loss: Mapping[str, Any],
        variant: Mapping[str, Any],
        optim: Mapping[str, Any],
        iterations: int,
        relative_motion: bool = True,
        pool_size: int = 50,
        init_gain: float = 1.0,
        check_finite: bool = True,
        content_stage_weights: tuple[float, ...] | list[float] = (1.0,),
        channels_last: bool = False,
        compile: Mapping[str, Any] | None = None,
        motion_pretrained: str | None = None,
        warmup_iterations: int = 0,
        log_grad_norms: bool = True,
    ) -> None:
        super().__init__()
        _require(loss, _LOSS_KEYS, "loss config")
        _require(variant, _VARIANT_KEYS, "variant config")
        if variant["discriminator"] not in _DISC_MODES:
            raise ValueError(f"variant.discriminator must be one of {_DISC_MODES}, got {variant['discriminator']!r}")
        if not (variant["paired"] or variant["unpaired"]):
            raise ValueError(
                "variant needs paired or unpaired data: both variant.paired and variant.unpaired are false"
            )
        if (variant["motion"] or variant["discriminator"] != "none") and not variant["unpaired"]:
            raise ValueError(f"variant {variant['name']!r} uses NeurMAP terms but variant.unpaired is false")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if warmup_iterations < 0:
            raise ValueError(f"model.warmup_iterations must be >= 0, got {warmup_iterations}")
        if warmup_iterations and not variant["paired"]:
            raise ValueError(
                f"model.warmup_iterations={warmup_iterations} keeps D on the content loss, but variant "
                f"{variant['name']!r} has no paired data; set model.warmup_iterations=0"
            )
        if motion_pretrained and not variant["motion"]:
            raise ValueError(f"model.motion_pretrained is set, but variant {variant['name']!r} has no motion network")
        self.automatic_optimization = False
        self.warmup_iterations = int(warmup_iterations)
        self.log_grad_norms = bool(log_grad_norms)
        self.loss_cfg = dict(loss)
        self.variant = dict(variant)
        self.use_motion = bool(variant["motion"])
        self.disc_mode = str(variant["discriminator"])
        self.iterations = int(iterations)
        self.relative_motion = bool(relative_motion)
        self.check_finite = bool(check_finite)
        self.channels_last = bool(channels_last)
        self.compile_options = dict(compile) if compile is not None else None
        self.content_stage_weights = [float(w) for w in content_stage_weights]
        if not self.content_stage_weights:
            raise ValueError("content_stage_weights must hold at least the final output's weight")
        self.save_hyperparameters(
            {
                "loss": self.loss_cfg,
                "variant": self.variant,
                "iterations": self.iterations,
                "relative_motion": self.relative_motion,
                "pool_size": pool_size,
                "config": None,  # the whole resolved run config, set by remember_config()
            }
        )

        self.deblur_net = deblur_net
        self.reblur = reblur
        self.motion_net = xavier_init_(motion_net, init_gain) if self.use_motion else None
        if motion_pretrained:
            load_motion_pretrained(self.motion_net, motion_pretrained)
        self.discriminator = xavier_init_(discriminator, init_gain) if self.disc_mode != "none" else None
        if self.use_motion and motion_net is None:
            raise ValueError(f"variant {variant['name']!r} needs a motion network, got None")
        if self.disc_mode != "none" and discriminator is None:
            raise ValueError(f"variant {variant['name']!r} needs a discriminator, got None")
        self.pool = MotionPool(pool_size) if self.use_motion else None

        # Optimizer order = configure_optimizers order; the step order is motion, disc, deblur.
        self.opt_names = ["deblur"]
        if self.use_motion:
            self.opt_names.append("motion")
        if self.disc_mode != "none":
            self.opt_names.append("disc")
        self._check_optim(optim)

    def networks(self) -> dict[str, nn.Module]:
        return {"deblur": self.deblur_net, "motion": self.motion_net, "disc": self.discriminator}

    def configure_model(self) -> None:
        """Apply the GPU users' switches once, before training: channels_last and torch.compile."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_options is not None and not getattr(self, "_compiled", False):
            self.deblur_net.net.compile(**self.compile_options)
            self._compiled = True

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # ------------------------------------------------------------------ forward
    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        """Deblur a (B, 3, H, W) batch in [0, 1]."""
        return self.deblur_net(blurry)

    def motion(self, images: torch.Tensor) -> torch.Tensor:
        """Canonical motion map M(images), (B, 2, H, W) in normalised units."""
        return canonicalize_motion(self.motion_net(images))

    def relative(self, motion_blurry: torch.Tensor, motion_deblurred: torch.Tensor) -> torch.Tensor:
        """The motion fed to R: M(B) - M(S_hat) (relative, default) or M(B) (absolute)."""
        return motion_blurry - motion_deblurred if self.relative_motion else motion_blurry

    # ----------------------------------------------------------------- training
    def _split_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Gather the blurry and sharp images of a combined batch and where the paired part ends."""
        paired = batch.get("paired") if self.variant["paired"] else None
        blurs, sharps = [], []
        if paired is not None:
            blurs.append(paired["blur"])
            sharps.append(paired["sharp"])
        if self.variant["unpaired"]:
            for key in ("blur", "sharp"):
                if batch.get(key) is None:
                    raise KeyError(f"training batch has no {key!r} loader, needed by variant {self.variant['name']!r}")
            blurs.append(batch["blur"]["blur"])
            sharps.append(batch["sharp"]["sharp"])
        n_paired = 0 if paired is None else paired["blur"].shape[0]
        return {"blur": self._images(torch.cat(blurs)), "sharp": self._images(torch.cat(sharps)), "n_paired": n_paired}

    def _map_slice(self, n_paired: int) -> slice:
        """Which rows of the batch the MAP terms use: unpaired only (paper), or all (authors' code)."""
        return slice(0, None) if self.loss_cfg["map_on_paired"] else slice(n_paired, None)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        data = self._split_batch(batch)
        blur, sharp, n_paired = data["blur"], data["sharp"], data["n_paired"]
        optimizers = self._named_optimizers()
        warming_up = self.iteration < self.warmup_iterations
        stages = self.deblur_net.forward_stages(blur)  # computed once, reused by all three steps
        deblurred = stages[-1]
        logs: dict[str, torch.Tensor] = {}
        if self.use_motion:
            logs |= self._step("motion", optimizers["motion"], self._motion_loss, blur, sharp, deblurred, n_paired)
        if self.disc_mode != "none":
            logs |= self._step("disc", optimizers["disc"], self._disc_loss, blur, sharp, deblurred, n_paired)
        on_parts = self._deblur_grad_logs if self.log_grad_norms and self._should_log() else None
        logs |= self._step(
            "deblur",
            optimizers["deblur"],
            self._deblur_loss,
            blur,
            sharp,
            stages,
            n_paired,
            warming_up,
            on_parts=on_parts,
        )
        logs["train/deblur/map_terms_on"] = torch.tensor(float(not warming_up))
        self._step_schedulers(logs)
        shown = logs.pop("train/deblur/total")
        self.log("train/deblur/total", shown, prog_bar=True, on_step=True, on_epoch=False, batch_size=blur.shape[0])
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=blur.shape[0])

    def _deblur_grad_logs(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each D term's gradient norm and its share of the terms' summed norms: a term that dominates D
        shows up here (an extra backward per term, on logging steps only)."""
        params = [p for p in self.deblur_net.parameters() if p.requires_grad]
        norms = grad_norms(parts, params)
        total = torch.stack(list(norms.values())).sum().clamp_min(1e-12)
        logs = {f"train/deblur/grad_norm/{k}": v for k, v in norms.items()}
        return logs | {f"train/deblur/grad_share/{k}": v / total for k, v in norms.items()}

    def _motion_loss(
        self, blur: torch.Tensor, sharp: torch.Tensor, deblurred: torch.Tensor, n_paired: int
    ) -> dict[str, torch.Tensor]:
        """Eq. 10: lambda * L_reblur + L_kernel + L_tv(M_rel), trained on S_hat.detach()."""
        w = self.loss_cfg
        rows = self._map_slice(n_paired)  # paired images come first in blur, sharp and deblurred
        blur, sharp, deblurred = blur[rows], sharp[rows], deblurred[rows]
        nb, ns = blur.shape[0], sharp.shape[0]
        # M has no normalisation layers, so one batched forward equals three separate ones.
        motion = self.motion(torch.cat([blur, sharp, deblurred.detach()]))
        m_blur, m_sharp, m_deblurred = motion[:nb], motion[nb : nb + ns], motion[nb + ns :]
        self._push_sharp_motion(m_sharp)
        m_rel = self.relative(m_blur, m_deblurred)
        reblurred = self.reblur(deblurred.detach(), m_rel)
        parts = {
            "reblur": w["reblur_motion"] * terms.reblur_loss(reblurred, blur, w["reblur_msssim_ratio"]),
            "kernel_blurry": w["kernel_blurry"] * terms.kernel_blurry(m_blur, w["kernel_blurry_target"]),
            "kernel_sharp": w["kernel_sharp"] * terms.kernel_sharp(m_sharp),
            "kernel_deblurred": w["kernel_deblurred"] * terms.kernel_deblurred(m_deblurred, m_blur),
            "tv": w["motion_tv"] * terms.total_variation(m_rel),
        }
        if w["kernel_hinge"]:
            parts["kernel_hinge"] = w["kernel_hinge"] * terms.kernel_hinge(m_deblurred, m_blur)
        return parts

    def _push_sharp_motion(self, m_sharp: torch.Tensor) -> None:
        """Feed the E[|M(S)|] pool; under DDP every rank pushes every rank's samples, in rank order,
        so all ranks keep the same pool (one large batch, as on a single device)."""
        means = m_sharp.detach().abs().float().mean(dim=(2, 3))
        if self.trainer.world_size > 1:
            means = self.all_gather(means).reshape(-1, means.shape[-1])
        self.pool.push_means(means)

    def _disc_loss(
        self, blur: torch.Tensor, sharp: torch.Tensor, deblurred: torch.Tensor, n_paired: int
    ) -> dict[str, torch.Tensor]:
        """Eq. 8/12: LSGAN; "real" holds blurry and sharp images (natural) or sharp only."""
        rows = self._map_slice(n_paired)
        blur, sharp, fake = blur[rows], sharp[rows], deblurred[rows].detach()
        # natural: half sharp, half blurry, as the authors' mixed batch (same size as the fake batch)
        real = torch.cat([sharp[0::2], blur[1::2]]) if self.disc_mode == "natural" else sharp
        if self.variant["disc_fake_blurry"]:  # Net1: blurry images are fake too
            fake = torch.cat([fake, blur])
        return {
            "real": terms.lsgan(self.discriminator(real), 1.0),
            "fake": terms.lsgan(self.discriminator(fake), 0.0),
        }

    def _content(self, stages: list[torch.Tensor], sharp: torch.Tensor) -> torch.Tensor:
        """Content loss over the supervised outputs (final last), targets resized to each output."""
        if len(self.content_stage_weights) > len(stages):
            raise ValueError(
                f"content_stage_weights has {len(self.content_stage_weights)} weights but the backbone "
                f"returns {len(stages)} outputs"
            )
        total = sharp.new_zeros(())
        for weight, out in zip(self.content_stage_weights, stages[-len(self.content_stage_weights) :]):
            target = sharp if out.shape[-2:] == sharp.shape[-2:] else F.interpolate(sharp, out.shape[-2:], mode="area")
            total = total + weight * terms.distance(out, target, self.loss_cfg["content_norm"])
        return total

    def _deblur_loss(
        self,
        blur: torch.Tensor,
        sharp: torch.Tensor,
        stages: list[torch.Tensor],
        n_paired: int,
        warming_up: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Eq. 11: content on paired data; reblur, priors and TV on unpaired data (not while warming up)."""
        w = self.loss_cfg
        deblurred = stages[-1]
        parts: dict[str, torch.Tensor] = {}
        if n_paired:
            parts["content"] = w["content"] * self._content([s[:n_paired] for s in stages], sharp[:n_paired])
        if not self.variant["unpaired"] or warming_up:
            return parts
        unpaired_blur, unpaired_deblurred = blur[n_paired:], deblurred[n_paired:]
        rows = self._map_slice(n_paired)
        if self.use_motion:
            m_rows = self.motion(deblurred[rows])  # M's parameters are toggled off: gradients reach D only
            m_deblurred = m_rows[n_paired:] if w["map_on_paired"] else m_rows
            with torch.no_grad():
                m_blur = self.motion(unpaired_blur)
            reblurred = self.reblur(unpaired_deblurred, self.relative(m_blur, m_deblurred).detach())
            parts["reblur"] = w["reblur_deblur"] * terms.reblur_loss(reblurred, unpaired_blur, w["reblur_msssim_ratio"])
            parts["sharp_prior"] = w["sharp_prior"] * terms.sharp_prior(
                m_rows, self.pool.expectation(), w["sharp_prior_norm"]
            )
            parts["motion_tv"] = w["deblurred_motion_tv"] * terms.total_variation(m_deblurred)
        if self.disc_mode != "none":
            parts["natural"] = w["natural"] * terms.lsgan(self.discriminator(deblurred[rows]), 1.0)
        if w["image_tv"]:
            parts["image_tv"] = w["image_tv"] * terms.total_variation(unpaired_deblurred)
        return parts

    # --------------------------------------------------------------- evaluation
    def _eval_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int) -> dict[str, torch.Tensor]:
        blur = batch["blur"]
        deblurred = self.deblur_net(blur).clamp(0, 1)
        n = blur.shape[0]
        out = {}
        if "sharp" in batch:
            sharp = batch["sharp"]
            out["psnr"] = peak_signal_noise_ratio(deblurred, sharp, data_range=1.0, reduction="none", dim=(1, 2, 3))
            out["ssim"] = structural_similarity_index_measure(deblurred, sharp, data_range=1.0, reduction="none")
            out["input_psnr"] = peak_signal_noise_ratio(blur, sharp, data_range=1.0, reduction="none", dim=(1, 2, 3))
        if self.use_motion:
            motion = self.relative(self.motion(blur), self.motion(deblurred))
            reblurred = self.reblur(deblurred, motion)
            out["reblur_psnr"] = peak_signal_noise_ratio(
                reblurred.clamp(0, 1), blur, data_range=1.0, reduction="none", dim=(1, 2, 3)
            )
            # > 0 dB: reblurring along M's motion brings S_hat closer to B than S_hat itself is,
            # i.e. M explains the blur that D removed (no ground truth needed)
            out["reblur_gain"] = out["reblur_psnr"] - peak_signal_noise_ratio(
                deblurred, blur, data_range=1.0, reduction="none", dim=(1, 2, 3)
            )
            if "motion" in batch:  # M's progress against an M that learned nothing (a zero map)
                out["motion_epe"] = motion_epe(motion * self.reblur.alpha, batch["motion"]).float()
                out["motion_epe_zero"] = motion_epe(torch.zeros_like(batch["motion"]), batch["motion"]).float()
        self._log_eval(stage, dataloader_idx, out, n)
        return out

    @torch.no_grad()
    def image_panels(self, batch: Mapping[str, Any], max_images: int = 4) -> dict[str, torch.Tensor]:
        """Named (N, 3, H, W) panels in [0, 1] for the image logger: blurry, deblurred, reblurred,
        sharp, and the relative motion in flow colours (scaled to pixels)."""
        from neurmap.utils.flow_vis import flow_panels

        blur = batch["blur"][:max_images]
        deblurred = self.deblur_net(blur).clamp(0, 1)
        panels = {"blurry": blur, "deblurred": deblurred}
        flows = {}
        if self.use_motion:
            motion = self.relative(self.motion(blur), self.motion(deblurred))
            panels["reblurred"] = self.reblur(deblurred, motion).clamp(0, 1)
            flows["motion"] = motion * self.reblur.alpha  # pixels of full blur length
        if "sharp" in batch:
            panels["sharp"] = batch["sharp"][:max_images]
        if "motion" in batch:
            flows["motion_gt"] = batch["motion"][:max_images]
        panels |= flow_panels(flows)  # one colour scale for predicted and ground-truth motion
        return panels

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("hyper_parameters", {}).get("variant")
        if saved is not None and saved.get("name") != self.variant["name"]:
            # Starting a new variant from another run's weights goes through backbone.pretrained instead.
            raise ValueError(
                f"checkpoint was trained as variant {saved.get('name')!r}, this run is {self.variant['name']!r}; "
                "to fine-tune from it use backbone.pretrained=<ckpt> instead of ckpt_path"
            )
