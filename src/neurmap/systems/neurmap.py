"""NeurMAPSystem: the LightningModule that trains D, M and N with three optimizers.

:meth:`NeurMAPSystem.training_step` is one iteration of the paper's Fig. 3 (the M step, the N step, then
the D step through the just-updated M and N); README "Architecture: where things live" describes it once,
term by term. The objectives themselves are :mod:`neurmap.losses.objectives`; the paper's ablations
(Table 3) switch parts off through ``variant``, and every weight comes from ``conf/loss``.

Beyond the paper: M can start from a motion-pretraining run (``motion_pretrained``, see
:mod:`neurmap.systems.motion_pretrain`), D can be kept on the content loss alone for the first
``warmup_iterations`` while M and N train, the signal diagnostic (:meth:`NeurMAPSystem.signal`) runs at every
validation, and on the logging steps the share of each D term in D's gradient norm is logged
(``train/deblur/grad_norm/<term>``, ``train/deblur/grad_share/<term>``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from neurmap.losses import terms
from neurmap.losses.objectives import (
    BatchSplit,
    LossWeights,
    UnpairedOutputs,
    Variant,
    check_variant,
    check_weights,
    content_objective,
    deblur_objective,
    disc_objective,
    from_mapping,
    missing_oracle_motion,
    motion_objective,
    natural_real,
    split_batch,
)
from neurmap.losses.pool import MotionPool
from neurmap.metrics.motion import motion_epe
from neurmap.metrics.signal import gradient_cosines
from neurmap.nets.backbones import DeblurNet, load_pretrained
from neurmap.nets.init import xavier_init_
from neurmap.nets.motion import load_motion_pretrained, reblur_motion, reblur_motion_from_maps
from neurmap.nets.reblur import canonicalize_motion
from neurmap.systems.base import ManualSystem, linear_decay

__all__ = ["NeurMAPSystem", "linear_decay"]


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

    Each network comes with its optimizer (``model.deblur``, ``model.motion``, ``model.disc``): a mapping with
    ``net``, ``optimizer`` (a factory taking parameters, e.g. a Hydra ``_partial_`` Adam) and ``grad_clip`` (max
    global grad-norm, or None). The modules keep the names ``deblur_net``, ``motion_net`` and ``discriminator``
    (the checkpoints' state-dict keys).

    Args:
        deblur: D (``conf/backbone``): ``net`` (the backbone, [0,1] images in and out, wrapped in a
            :class:`~neurmap.nets.backbones.DeblurNet` padding to ``pad_multiple``), ``stage_weights`` (the
            content-loss weights of a multi-output backbone's outputs, aligned with the LAST outputs, final
            last: ``[1.0]`` supervises the final image only, ``[1, 1, 1]`` every stage of MPRNet / every scale of
            MIMO-UNet; targets are area-resized), ``pretrained`` and ``pretrained_key`` (weights to start D
            from, :func:`~neurmap.nets.backbones.load_pretrained`; None = the backbone's own init), and the
            optimizer.
        motion: M, whose ``net`` returns (B, 2, H, W) motion in normalised units; dropped when
            ``variant.motion`` is false.
        disc: N, whose ``net`` returns a list of per-scale logit maps; dropped when
            ``variant.discriminator == "none"``.
        reblur: R, parameter-free (:class:`~neurmap.nets.reblur.Reblur`).
        loss: the weights of ``conf/loss`` (:class:`~neurmap.losses.objectives.LossWeights`, a mapping).
        variant: ``conf/variant`` (:class:`~neurmap.losses.objectives.Variant`): which parts of NeurMAP are
            on (Table 3 ablations).
        iterations: training length in iterations (one batch = one iteration, whatever the number
            of optimizers); learning rates decay linearly to 0 over it.
        relative_motion: reblur with M_rel = M(B) - M(S_hat) (the paper and the authors' code), or
            with the absolute M(B) (:func:`~neurmap.nets.motion.reblur_motion`).
        pool_size: samples in the running pool behind E[|M(S)|].
        init_gain: Xavier gain for M and N (paper §4.1).
        check_finite: stop with a clear error when a loss becomes NaN/inf.
        channels_last: NHWC memory format for the networks and images (faster convolutions on
            recent GPUs with mixed precision).
        compile: ``torch.compile`` options for D (e.g. ``{"mode": "max-autotune"}``); None = eager.
            D is compiled in place, so checkpoint keys do not change. R always runs eagerly in fp32.
        motion_pretrained: a checkpoint of ``variant=motion_pretrain`` (or any file holding M's state dict)
            to start M from, instead of Xavier init; None = from scratch (the paper).
        warmup_iterations: for the first K iterations D trains on the content loss only (its MAP terms are
            off) while M and N train as usual; 0 = off (the paper).
        log_grad_norms: on logging steps, log each D term's gradient norm and its share of their sum.
        signal_batches: on the first K batches of every val set with sharp images, log the cosine between D's
            gradient of each of its terms and of the supervised loss (``val/<set>/signal_cos/<term>``,
            :meth:`signal`); 0 = off.
        motion_scale: length calibration of the motion R receives: R gets ``motion_scale`` times the relative
            or absolute motion (:func:`~neurmap.nets.motion.reblur_motion`); 1 = none (the paper).
    """

    def __init__(
        self,
        deblur: Mapping[str, Any],
        motion: Mapping[str, Any] | None,
        disc: Mapping[str, Any] | None,
        reblur: nn.Module,
        loss: Mapping[str, Any],
        variant: Mapping[str, Any],
        iterations: int,
        relative_motion: bool,
        motion_scale: float,
        pool_size: int = 50,
        init_gain: float = 1.0,
        check_finite: bool = True,
        channels_last: bool = False,
        compile: Mapping[str, Any] | None = None,
        motion_pretrained: str | None = None,
        warmup_iterations: int = 0,
        log_grad_norms: bool = True,
        signal_batches: int = 4,
    ) -> None:
        super().__init__()
        weights = check_weights(from_mapping(LossWeights, loss, "loss"))
        variant = check_variant(from_mapping(Variant, variant, "variant"))
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if warmup_iterations < 0:
            raise ValueError(f"model.warmup_iterations must be >= 0, got {warmup_iterations}")
        if warmup_iterations and not variant.paired:
            raise ValueError(
                f"model.warmup_iterations={warmup_iterations} keeps D on the content loss, but variant "
                f"{variant.name!r} has no paired data; set model.warmup_iterations=0"
            )
        if motion_pretrained and not variant.motion:
            raise ValueError(f"model.motion_pretrained is set, but variant {variant.name!r} has no motion network")
        if signal_batches < 0:
            raise ValueError(f"model.signal_batches must be >= 0, got {signal_batches}")
        if not motion_scale > 0:
            raise ValueError(f"model.motion_scale must be > 0, got {motion_scale}")
        self.motion_scale = float(motion_scale)
        self.signal_batches = int(signal_batches)
        self.automatic_optimization = False
        self.warmup_iterations = int(warmup_iterations)
        self.log_grad_norms = bool(log_grad_norms)
        self.weights = weights
        self.variant = variant
        self.iterations = int(iterations)
        self.relative_motion = bool(relative_motion)
        self.check_finite = bool(check_finite)
        self.channels_last = bool(channels_last)
        self.compile_options = dict(compile) if compile is not None else None
        self.content_stage_weights = [float(w) for w in deblur.get("stage_weights", (1.0,))]
        if not self.content_stage_weights:
            raise ValueError("model.deblur.stage_weights must hold at least the final output's weight")
        self.save_hyperparameters(
            {
                "loss": dataclasses.asdict(weights),
                "variant": dataclasses.asdict(variant),
                "iterations": self.iterations,
                "relative_motion": self.relative_motion,
                "pool_size": pool_size,
                "config": None,  # the whole resolved run config, set by remember_config()
            }
        )

        self.deblur_net = DeblurNet(deblur["net"], int(deblur["pad_multiple"]))
        if deblur.get("pretrained"):
            load_pretrained(self.deblur_net, deblur["pretrained"], key=deblur.get("pretrained_key"))
        self.reblur = reblur
        motion_net = (motion or {}).get("net")
        discriminator = (disc or {}).get("net")
        if self.variant.motion and motion_net is None:
            raise ValueError(f"variant {variant.name!r} needs a motion network (model.motion.net), got None")
        if self.variant.discriminator != "none" and discriminator is None:
            raise ValueError(f"variant {variant.name!r} needs a discriminator (model.disc.net), got None")
        self.motion_net = xavier_init_(motion_net, init_gain) if self.variant.motion else None
        if motion_pretrained:
            load_motion_pretrained(self.motion_net, motion_pretrained)
        if self.variant.motion and not self.variant.motion_learns:
            self.motion_net.requires_grad_(False)
        self.motion_pretrained = motion_pretrained
        self.discriminator = xavier_init_(discriminator, init_gain) if self.variant.discriminator != "none" else None
        self.pool = MotionPool(pool_size) if self.variant.motion else None

        # Optimizer order = configure_optimizers order; the step order is motion, disc, deblur.
        self.opt_names = ["deblur"]
        if self.variant.motion and self.variant.motion_learns:
            self.opt_names.append("motion")
        if self.variant.discriminator != "none":
            self.opt_names.append("disc")
        self._check_optim({"deblur": deblur, "motion": motion or {}, "disc": disc or {}})

    def networks(self) -> dict[str, nn.Module]:
        return {"deblur": self.deblur_net, "motion": self.motion_net, "disc": self.discriminator}

    def on_fit_start(self) -> None:
        """A frozen M must start from a pretraining (a checkpoint rebuilt for evaluation holds its weights)."""
        if self.variant.motion and not self.variant.motion_learns and not self.motion_pretrained:
            raise ValueError(
                f"variant {self.variant.name!r} freezes M as it starts, but model.motion_pretrained is not set "
                "(a frozen Xavier-initialised M estimates nothing)"
            )

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

    def _motion_settings(self) -> dict[str, Any]:
        """``relative`` and ``scale`` of :func:`~neurmap.nets.motion.reblur_motion` for this run."""
        return {"relative": self.relative_motion, "scale": self.motion_scale}

    # ----------------------------------------------------------------- training
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """One iteration: the M step, the N step, then the D step (README, Architecture)."""
        split = split_batch(batch, self.variant, self.weights.map_on_paired)
        split = dataclasses.replace(split, blur=self._images(split.blur), sharp=self._images(split.sharp))
        opt = self._named_optimizers()
        stages = self.deblur_net.forward_stages(split.blur)  # S_hat once, reused by all three steps
        s_hat = split.unsupervised_rows(stages[-1]).detach()
        logs: dict[str, torch.Tensor] = {}
        if "motion" in opt:
            logs |= self._step("motion", opt["motion"], self._motion_loss, split, s_hat)
        elif self.variant.motion:  # M frozen: it only feeds the E[|M(S)|] pool
            with torch.no_grad():
                self.pool.push(self.motion(split.unsupervised_rows(split.sharp)))
        if self.variant.discriminator != "none":
            logs |= self._step("disc", opt["disc"], self._disc_loss, split, s_hat)
        unsupervised_on = self.iteration >= self.warmup_iterations
        on_parts = self._deblur_grad_logs if self.log_grad_norms and self._should_log() else None
        oracle = self._oracle_motion(split)
        logs |= self._step(
            "deblur", opt["deblur"], self._deblur_loss, split, stages, unsupervised_on, oracle, on_parts=on_parts
        )
        logs["train/deblur/map_terms_on"] = torch.tensor(float(unsupervised_on))
        self._step_schedulers(logs)
        shown = logs.pop("train/deblur/total")
        n = split.blur.shape[0]
        self.log("train/deblur/total", shown, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)

    def _motion_loss(self, split: BatchSplit, deblurred: torch.Tensor) -> dict[str, torch.Tensor]:
        """M's objective (eq. 10) on the unsupervised rows (``deblurred``: their S_hat, detached), feeding the
        E[|M(S)|] pool with this batch's sharp images."""
        w = self.weights.effective()
        blur, sharp = split.unsupervised_rows(split.blur), split.unsupervised_rows(split.sharp)
        # M has no normalisation layers, so one batched forward equals three separate ones.
        sizes = [blur.shape[0], sharp.shape[0], deblurred.shape[0]]
        m_blur, m_sharp, m_fake = self.motion(torch.cat([blur, sharp, deblurred])).split(sizes)
        m_reblur = reblur_motion_from_maps(m_blur, m_fake, **self._motion_settings())
        reblurred = self.reblur(deblurred, m_reblur) if w.reblur_motion else None
        self.pool.push(m_sharp)
        return motion_objective(
            w,
            blur=blur,
            reblurred=reblurred,
            motion_blurry=m_blur,
            motion_sharp=m_sharp,
            motion_deblurred=m_fake,
            motion_reblur=m_reblur,
        )

    def _disc_loss(self, split: BatchSplit, deblurred: torch.Tensor) -> dict[str, torch.Tensor]:
        """N's objective (eq. 8, 12): the variant's "real" images against S_hat (and, for Net1, the blurry ones)."""
        blur = split.unsupervised_rows(split.blur)
        fake = torch.cat([deblurred, blur]) if self.variant.disc_fake_blurry else deblurred
        real_scores = self.discriminator(natural_real(split, self.variant.discriminator))
        return disc_objective(real_scores=real_scores, fake_scores=self.discriminator(fake))

    def _deblur_loss(
        self,
        split: BatchSplit,
        stages: list[torch.Tensor],
        unsupervised_on: bool,
        oracle: torch.Tensor | None,
        weights: LossWeights | None = None,
    ) -> dict[str, torch.Tensor]:
        """D's objective (eq. 11): the content loss of the paired rows and, when ``unsupervised_on``, the unpaired
        terms through the frozen M, R and N; ``oracle`` (R's units) replaces M's motion in the reblur term (the
        oracle-motion ablation; else None). ``weights``: the run's unless given."""
        w = (self.weights if weights is None else weights).effective()
        paired = [split.paired(s) for s in stages]
        parts = content_objective(
            w, stages=paired, sharp=split.paired(split.sharp), stage_weights=self.content_stage_weights
        )
        if unsupervised_on and self.variant.unpaired and split.has_unpaired:
            parts |= deblur_objective(w, self._unpaired_outputs(w, split, stages[-1], oracle))
        return parts

    def _unpaired_outputs(
        self, w: LossWeights, split: BatchSplit, deblurred: torch.Tensor, oracle: torch.Tensor | None
    ) -> UnpairedOutputs:
        """What D's unpaired terms read, each computed only when a weight needs it (``w`` effective)."""
        blur, fake = split.unpaired(split.blur), split.unpaired(deblurred)
        rows = split.unsupervised_rows(deblurred)
        reblurred = m_rows = expectation = scores = None
        if self.variant.motion and (w.reblur_deblur or w.sharp_prior or w.deblurred_motion_tv):
            m_rows = self.motion(rows)
            if w.reblur_deblur:
                motion = oracle
                if motion is None:
                    with torch.no_grad():
                        motion = reblur_motion_from_maps(
                            self.motion(blur), m_rows[-fake.shape[0] :], **self._motion_settings()
                        )
                reblurred = self.reblur(fake, motion.detach())
            expectation = self.pool.expectation() if w.sharp_prior else None
        if self.discriminator is not None and w.natural:
            scores = self.discriminator(rows)
        return UnpairedOutputs(blur, fake, reblurred, m_rows, expectation, scores)

    def _oracle_motion(self, split: BatchSplit) -> torch.Tensor | None:
        """The ground-truth motion of the unpaired rows in R's units, for the oracle-motion ablation (else None)."""
        if not self.variant.oracle_motion or not split.has_unpaired:
            return None
        if split.unpaired_motion is None:
            raise ValueError(missing_oracle_motion(self.variant.name))
        return split.unpaired_motion.to(split.blur) / self.reblur.alpha

    def _deblur_grad_logs(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each D term's gradient norm and its share of the terms' summed norms: a term that dominates D
        shows up here (an extra backward per term, on logging steps only)."""
        params = [p for p in self.deblur_net.parameters() if p.requires_grad]
        norms = grad_norms(parts, params)
        total = torch.stack(list(norms.values())).sum().clamp_min(1e-12)
        logs = {f"train/deblur/grad_norm/{k}": v for k, v in norms.items()}
        return logs | {f"train/deblur/grad_share/{k}": v / total for k, v in norms.items()}

    # --------------------------------------------------------------- evaluation
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)
        if batch_idx < self.signal_batches and "sharp" in batch:
            self._log_eval("val", dataloader_idx, self.signal(batch), batch["blur"].shape[0])

    def signal(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per image, the cosine between D's gradient of each of its MAP terms and of the supervised loss
        ``||D(B) - S||^2`` (:func:`neurmap.metrics.signal.gradient_cosines`): positive = the term moves D
        towards the sharp image. The images are treated as unpaired rows (the terms of ``train/deblur/weighted``);
        ``unpaired`` is the weighted sum of those terms at the run's weights (the direction D takes from unpaired
        images); with ground-truth motion, ``reblur_true_motion`` is the reblur term with R fed that motion.

        Runs with gradients enabled, also under Lightning's inference mode, and writes no ``.grad``. The
        sharp-image prior is left out while the E[|M(S)|] pool is empty (the sanity check).

        Returns:
            ``signal_cos/<term>`` -> (B,) cosines.
        """
        params = [p for p in self.deblur_net.parameters() if p.requires_grad]
        weights = self.weights
        if self.pool is None or int(self.pool.count) == 0:
            weights = dataclasses.replace(weights, sharp_prior=0.0)
        rows = []
        with torch.inference_mode(False), torch.enable_grad():
            images = {k: v.clone() for k, v in batch.items() if k in ("blur", "sharp", "motion")}
            for i in range(images["blur"].shape[0]):
                blur, sharp = images["blur"][i : i + 1], images["sharp"][i : i + 1]
                true_motion = images["motion"][i : i + 1] / self.reblur.alpha if "motion" in images else None
                stages = self.deblur_net.forward_stages(blur)
                oracle = true_motion if self.variant.oracle_motion else None
                parts = self._deblur_loss(BatchSplit(blur, sharp, 0, False), stages, True, oracle, weights)
                reference = terms.distance(stages[-1], sharp, "l2")
                row = gradient_cosines(reference, parts, params, combined="unpaired")
                if true_motion is not None:
                    reblurred = self.reblur(stages[-1], true_motion)
                    true_term = {"reblur_true_motion": terms.reblur_loss(reblurred, blur, weights.reblur_msssim_ratio)}
                    row |= gradient_cosines(reference, true_term, params)
                rows.append(row)
        return {f"signal_cos/{k}": torch.stack([row[k] for row in rows]) for k in rows[0]}

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
        if self.variant.motion:
            motion = reblur_motion(self.motion_net, blur, deblurred, **self._motion_settings())
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
        if self.variant.motion:
            motion = reblur_motion(self.motion_net, blur, deblurred, **self._motion_settings())
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
        if saved is not None and saved.get("name") != self.variant.name:
            # Starting a new variant from another run's weights goes through model.deblur.pretrained instead.
            raise ValueError(
                f"checkpoint was trained as variant {saved.get('name')!r}, this run is {self.variant.name!r}; "
                "to fine-tune from it use model.deblur.pretrained=<ckpt> instead of ckpt_path"
            )
