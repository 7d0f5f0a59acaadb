"""The training engine: one loop for teacher training and every distillation method.

``Distiller(config, cases, teacher=...).run()`` is a generator of :class:`Event` objects; the CLI prints
them, the napari widget forwards them from a worker thread (both through :mod:`napari_dmd.runner`). A stop
request is honoured between steps. Beside this module: :mod:`.events` (Event), :mod:`.resolve` (patch size,
loader workers, precision, lr schedule), :mod:`.validation` (split, references, Dice) and :mod:`.state`
(checkpoints: writing, resuming).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import runs
from ..config import ConfigError, TrainConfig, focus_share
from ..data.cases import Case, check_patch_size, validate_cases
from ..data.sampling import PatchSampler, PatchStream
from ..data.transforms import normalize
from ..inference import sliding_window_predict
from ..models.heads import ScaleHeads
from ..models.presets import as_trained, build_model, count_parameters
from ..models.unet import UNet
from ..runs import TrainingError  # defined beside the run-folder code (which raises it too); still importable here
from ..runtime import cpu_bf16_supported, resolve_device  # names kept here (tests patch cpu_bf16_supported)
from ..teachers.base import Teacher
from . import _common, state, validation
from .distributed import all_gather_objects, all_reduce_sum, barrier, init_distributed
from .events import Event
from .methods import TABLE, distill_loss, get_method, head_weight, target_settings
from .resolve import (
    auto_patch_size,
    autocast,
    choose_precision,
    layout_batch,
    lr_factor,
    resolve_num_workers,
    student_memory_format,
)
from .stopping import StepGuard
from .validation import IGNORE

__all__ = ["HEAD_METHODS", "IGNORE", "Distiller", "Event", "TrainNet", "TrainingError", "auto_patch_size",
           "cpu_bf16_supported", "lr_factor", "resolve_device", "resolve_num_workers"]

HEAD_METHODS = tuple(m.name for m in TABLE if m.needs_heads)  # ("ds", "mfd", "dmd")


class TrainNet(nn.Module):
    """The trained parts in one module (student + optional scale heads), so DDP syncs both."""

    def __init__(self, model: UNet, heads: ScaleHeads | None, feature_scales: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.heads = heads
        self.feature_scales = list(feature_scales)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.heads is None:
            return self.model(x), []
        logits, feats = self.model(x, return_features=True)
        return logits, self.heads([feats[s] for s in self.feature_scales])


class Distiller:
    """Train ``config.model`` on ``cases`` with ``config.method``, optionally taught by ``teacher``.

    With ``teacher=None`` only method "none" or "ds" is possible (teacher training, or a student alone).
    Cases without labels take the teacher's prediction as their target class (so do voxels labelled IGNORE).
    ``focus``: boolean masks by case name of voxels to centre ``focus_fraction`` of the patches on (a corrections
    round's painted voxels, :func:`napari_dmd.corrections.start_round`). ``architecture``: a checkpoint's model
    entry whose options (norm, stem, upsample) the model takes when its channels match (a round's parent; a resumed
    run's own checkpoint is used by itself), so a run made with a preset since renamed goes on as it was trained.
    """

    def __init__(self, config: TrainConfig, cases: Sequence[Case], *, val_cases: Sequence[Case] | None = None,
                 teacher: Teacher | None = None, output_dir: str | Path | None = None,
                 resume: str | Path | None = None, role: str = "student",
                 focus: dict[str, np.ndarray] | None = None, architecture: dict | None = None) -> None:
        self.config = config.validate()
        cfg = self.config
        if cfg.head_supervision is None:  # resolved once, recorded as used (config.yaml, checkpoints); the step
            # passes it to distill_loss, which applies it only to methods that take it
            cfg.head_supervision = head_weight(cfg.method, None)
        if teacher is None and get_method(cfg.method).needs_teacher:
            raise ConfigError(f"method {cfg.method!r} needs a teacher; give one, or use method 'none'")
        if not cases:
            raise ConfigError("no training cases were given")
        self.teacher = teacher
        self.role = role
        self.device = resolve_device(cfg.device)
        self.dist = init_distributed(self.device.type == "cuda")
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.output_dir = runs.output_folder(output_dir, resume) or runs.default_output_dir(
            f"{role}-{cfg.method}" if role == "student" else role)
        if resume is None:
            runs.check_new_run_folder(self.output_dir)
        self._resumed = resume is not None
        self._stop, self.step_guard = False, StepGuard(self)  # step_guard: a stop inside a step (stopping.py)

        self._resolve_data(list(cases), val_cases, teacher)  # classes, dims, train/validation split
        spatial_dims, train_cases = self.spatial_dims, self.train_cases

        # models (a resumed run or a round keeps the architecture it was trained with: a renamed preset stays)
        resumed = state.load_checkpoint(resume) if resume is not None else None
        torch.manual_seed(cfg.seed)
        self.model: UNet = as_trained(build_model(cfg.model_channels(), spatial_dims, self.num_classes,
                                                  norm=cfg.norm), architecture or (resumed or {}).get("model"),
                                      cfg.model)
        scales = cfg.feature_scales
        if scales is None:
            scales = list(range(len(self.model.feature_strides) - 1)) or [0]
        if any(not 0 <= s < len(self.model.feature_strides) for s in scales):
            raise ConfigError(f"feature_scales {scales} out of range: the model has "
                              f"{len(self.model.feature_strides)} decoder stages (0 = deepest)")
        self.feature_scales = list(scales)
        self.heads: ScaleHeads | None = None
        if get_method(cfg.method).needs_heads:
            chans = [self.model.feature_channels[s] for s in self.feature_scales]
            self.heads = ScaleHeads(spatial_dims, chans, self.num_classes)
        shapes = [c.image.shape for c in train_cases]
        self.patch_size = list(cfg.patch_size) if cfg.patch_size else auto_patch_size(
            shapes, spatial_dims, self.model.total_stride)
        if len(self.patch_size) != spatial_dims:
            raise ConfigError(f"patch_size {self.patch_size} does not match a {spatial_dims}D model")
        check_patch_size(cfg.patch_size, train_cases)  # far larger than every image: refused
        stride = self.model.total_stride
        if self.model.norm == "instance" and math.prod(-(-p // stride) for p in self.patch_size) < 2:
            raise ConfigError(f"patch_size {self.patch_size} is too small for model {cfg.model!r}: it is halved "
                              f"down to one voxel, which instance normalization cannot train on; use patch_size "
                              f"{2 * stride} or more along one axis (small images are padded) or a shallower model")
        self.model.to(self.device)
        if self.heads is not None:
            self.heads.to(self.device)
        if teacher is not None:
            teacher.to(self.device)
        self.student_format = student_memory_format(cfg.channels_last, self.device, spatial_dims)
        if self.student_format is not None:
            self.model.to(memory_format=self.student_format)
        self.net = TrainNet(self.model, self.heads, self.feature_scales)
        self.train_net: nn.Module = self.net
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.train_net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if cfg.compile:
            self.train_net = torch.compile(self.train_net)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best_dice = -1.0
        self.best_lost: int | None = None  # lost classes of best.pt (None: from the history, after a resume)
        self._lost_before: list[int] = []  # lost at the previous validation
        self._warnings: list[Event] = []
        self.val_references: dict[str, np.ndarray] = {}

        self.sampler = PatchSampler(
            [normalize(c.image, self.normalization) for c in train_cases],
            [c.label for c in train_cases], tuple(self.patch_size), batch_size=cfg.batch_size,
            spatial_dims=spatial_dims, fg_fraction=cfg.fg_fraction, num_classes=self.num_classes,
            augment=cfg.augment, flips=cfg.flips, spatial=cfg.spatial_augment, ignore_index=IGNORE,
            seed=cfg.seed + 1000 * self.dist.rank,
            focus=[focus.get(c.name) for c in train_cases] if focus else None,
            focus_fraction=focus_share(cfg.focus_fraction, spatial_dims))
        self.num_workers = resolve_num_workers(cfg.num_workers, self.device)
        self._loader: torch.utils.data.DataLoader | None = None
        self._batches: Iterator | None = None
        self._val_images = [normalize(c.image, self.normalization) for c in self.val_cases]
        self._patch_hashes: list[str] = []
        self._sampler_states: list[dict] = []
        self.amp_dtype, self.teacher_dtype, self._precision_note = choose_precision(
            cfg, self.device, spatial_dims, cpu_bf16_supported)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if resumed is not None:  # settings added since the run began: it goes on as it was trained
            runs.apply_legacy_settings(cfg, resumed)
        self.run_record = runs.run_record(self)
        if resume is not None:
            state.load_state(self, resume, resumed)
        self._log_file: runs.EventLog | None = None
        self._tb = None

    # ------------------------------------------------------------------ setup
    def _resolve_data(self, cases: list[Case], val_cases: Sequence[Case] | None, teacher: Teacher | None) -> None:
        """Check the cases (every image; labels against the class count), choose the class count and the
        model's dims, split training and validation cases, and take the normalization."""
        cfg = self.config
        if teacher is not None:
            num_classes = cfg.num_classes or teacher.num_classes
            if num_classes != teacher.num_classes:
                raise ConfigError(f"teacher {teacher.source} predicts {teacher.num_classes} classes "
                                  f"but num_classes is {num_classes}")
        else:
            num_classes = cfg.num_classes
        labelled = [c for c in cases if c.has_label]
        if teacher is None and not labelled:
            raise ConfigError("training without a teacher needs labelled cases; none of the cases has a label")
        n_found = validate_cases(cases, num_classes)  # every image (NaN, constant), labelled or not
        self.num_classes = int(num_classes or n_found)
        data_dims = cases[0].ndim
        spatial_dims = cfg.spatial_dims or (teacher.spatial_dims if teacher is not None else data_dims)
        if spatial_dims > data_dims:
            hint = " (a volume with a single slice reads as 2D)" if data_dims == 2 else ""
            raise ConfigError(f"{cases[0].source}: {data_dims}D image{hint}, but the model is {spatial_dims}D"
                              + (f" like the teacher {teacher.source}" if teacher is not None else ""))
        if teacher is not None and teacher.spatial_dims != spatial_dims:
            raise ConfigError(f"teacher {teacher.source} is {teacher.spatial_dims}D but the student is "
                              f"{spatial_dims}D; set spatial_dims to {teacher.spatial_dims}")
        self.spatial_dims = spatial_dims
        train_cases, val_cases = validation.split_train_val(
            cases, val_cases, has_teacher=teacher is not None, val_fraction=cfg.val_fraction,
            max_val_cases=cfg.max_val_cases, seed=cfg.seed)
        self.train_cases, self.val_cases = train_cases, list(val_cases)
        self.normalization = teacher.normalization if teacher is not None else cfg.normalization

    # ------------------------------------------------------------------ public
    @property
    def total(self) -> int:
        return self.config.iterations

    @property
    def last_path(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.output_dir / "best.pt"

    def request_stop(self) -> None:
        """Ask the loop to stop before its next step (a checkpoint is then written)."""
        self._stop = True

    def parameter_counts(self) -> dict[str, int]:
        counts = {"model": count_parameters(self.model)}
        if self.teacher is not None and hasattr(self.teacher, "parameters"):
            counts["teacher"] = sum(p.numel() for p in self.teacher.parameters())
        return counts

    def run(self) -> Generator[Event, None, dict[str, Any]]:
        """Train until ``config.iterations`` or a stop request; yields an Event per step and more."""
        cfg = self.config
        if self.dist.is_main:  # config.yaml, events.jsonl cut back to a resumed step, tensorboard
            self._log_file = runs.open_run_folder(self, self._resumed)
            self._tb = runs.open_tensorboard(self, self._resumed) if cfg.tensorboard else None
        start_iter = self.iteration
        t0 = time.perf_counter()
        rate = 0.0
        try:
            yield self._emit(Event("start", self.iteration, self.total,
                                   message=f"{cfg.method} on {self.device.type}, "
                                           f"{count_parameters(self.model):,} parameters, "
                                           f"patch {self.patch_size} x {cfg.batch_size}, "
                                           f"{len(self.train_cases)} train / {len(self.val_cases)} val cases"
                                           + (f", {self.num_workers} loader workers" if self.num_workers else "")
                                           + self._precision_note))
            while self.iteration < self.total and not self._stop_requested():
                ts = time.perf_counter()
                try:
                    parts = self.step_guard.run(self._step)  # None: a stop came mid-step, rolled back
                except torch.OutOfMemoryError as e:
                    raise TrainingError(
                        f"out of memory on {self.device} at iteration {self.iteration + 1}: lower batch_size "
                        f"(now {cfg.batch_size}) or patch_size (now {self.patch_size}); the last checkpoint "
                        f"is kept") from e
                if parts is None:
                    break
                self.iteration += 1
                dt = time.perf_counter() - ts
                inst = cfg.batch_size / max(dt, 1e-9)
                rate = inst if rate == 0 else 0.9 * rate + 0.1 * inst
                done = self.iteration - start_iter
                its = done / max(time.perf_counter() - t0, 1e-9)
                ev = Event("step", self.iteration, self.total, parts=parts, lr=self._lr(),
                           samples_per_s=rate, eta_s=(self.total - self.iteration) / max(its, 1e-9))
                yield self._emit(ev, log=self.iteration % cfg.log_interval == 0)
                if self.step_guard.stopping():  # no validation or checkpoint on a stop: last.pt at once
                    break
                if self.val_cases and (self.iteration % cfg.val_interval == 0 or self.iteration == self.total):
                    yield self._emit(self._validate())
                    yield from (self._emit(w) for w in self._warnings)  # a class lost: said at once
                if self.iteration % cfg.checkpoint_interval == 0 and self.iteration < self.total:
                    yield self._emit(self._save_last())
            yield self._emit(self._save_last())
            kind = "done" if self.iteration >= self.total else "stopped"
            self._dump_rank_state()
            yield self._emit(Event(kind, self.iteration, self.total, path=str(self.last_path),
                                   mean_dice=self.best_dice if self.best_dice >= 0 else None,
                                   message=f"{kind} at iteration {self.iteration}"))
        except GeneratorExit:  # the consumer quit (e.g. napari closed the worker): keep the work done
            if self.iteration > start_iter:
                self._emit(self._save_last())
            raise
        finally:
            self._stop_workers()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self._tb is not None:
                self._tb.close()
        return {"iteration": self.iteration, "best_dice": self.best_dice, "last": str(self.last_path),
                "best": str(self.best_path) if self.best_path.exists() else None,
                "wall_s": time.perf_counter() - t0, "history": self.history}

    def run_to_end(self) -> dict[str, Any]:
        """Drive :meth:`run` to completion and return its summary (for scripts and tests)."""
        gen = self.run()
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    # ------------------------------------------------------------------ steps
    def _stop_requested(self) -> bool:
        """A stop asked on any rank stops every rank at the same step."""
        if not self.dist.enabled:
            return self._stop
        flag = torch.tensor([float(self._stop)], device=self.device)
        return bool(all_reduce_sum(flag, self.dist).item() > 0)

    def _dump_rank_state(self) -> None:
        """Debug hook for the DDP test: weights checksum and sampled-patch hashes of this rank."""
        folder = os.environ.get("NAPARI_DMD_RANK_DUMP")
        if not folder:
            return
        flat = torch.cat([p.detach().double().flatten().cpu() for p in self.net.parameters()])
        info = {"rank": self.dist.rank, "world_size": self.dist.world_size, "iteration": self.iteration,
                "weights_sum": float(flat.sum()), "weights_abs_sum": float(flat.abs().sum()),
                "patch_hashes": self._patch_hashes}
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"rank{self.dist.rank}.json").write_text(json.dumps(info))

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _set_lr(self) -> None:
        f = lr_factor(self.iteration, self.total, self.config.lr_warmup)
        for g in self.optimizer.param_groups:
            g["lr"] = self.config.lr * f

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (images, labels) batch on the CPU: sampled here (num_workers 0) or by the loader workers."""
        if self.num_workers == 0:
            images, labels, _ = self.sampler.sample()
            return torch.from_numpy(images), torch.from_numpy(labels)
        if self._batches is None:
            self._batches = self._start_workers()
        try:
            images, labels, _ = next(self._batches)
        except RuntimeError as e:  # e.g. a worker was killed; superqt would swallow a RuntimeError
            raise TrainingError(f"a data-loading worker failed ({e}); set num_workers to 0 to sample in the "
                                f"training process") from e
        return images, labels

    def _start_workers(self) -> Iterator:
        """DataLoader workers over the sampler, seeded from (seed, rank, worker, iteration); pinned on CUDA."""
        from torch.utils.data import DataLoader

        stream = PatchStream(self.sampler, seed=self.config.seed, rank=self.dist.rank, start=self.iteration)
        # fork shares the case images copy-on-write (workers only run NumPy); spawn pickles them once per worker
        context = "fork" if sys.platform.startswith("linux") else "spawn"
        self._loader = DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                  pin_memory=self.device.type == "cuda", persistent_workers=True, prefetch_factor=2,
                                  multiprocessing_context=context,
                                  generator=torch.Generator().manual_seed(self.config.seed))  # global RNG untouched
        return iter(self._loader)

    def _stop_workers(self) -> None:
        """Shut the loader workers down (joined, terminated if stuck); a later step starts new ones."""
        batches, self._batches, self._loader = self._batches, None, None
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def _autocast(self) -> torch.autocast:
        return autocast(self.device, self.amp_dtype)

    def _step(self) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        if self.heads is not None:
            self.heads.train()
        self._set_lr()
        x, y = self._next_batch()
        if os.environ.get("NAPARI_DMD_RANK_DUMP"):
            self._patch_hashes.append(hashlib.sha1(x.numpy().tobytes()).hexdigest())
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()  # no-op for batches the loader pinned already
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        x, x_student = layout_batch(x, self.student_format, self.device)
        teacher_logits = None
        pixel_weight = None
        if self.teacher is not None:
            with torch.no_grad(), autocast(self.device, self.teacher_dtype):
                teacher_logits = self.teacher(x).float()
            missing, top = y == IGNORE, None
            if cfg.correct_teacher:  # each label made the teacher's top class (logits swapped; _common.py)
                teacher_logits, top = _common.label_corrected_teacher(teacher_logits, y, IGNORE)
            if bool(missing.any()):  # (argmax over classes is slow on CPU: only when needed, and once)
                y = torch.where(missing, teacher_logits.argmax(1) if top is None else top, y)
                if cfg.confidence_weighting:
                    conf = torch.softmax(teacher_logits, 1).amax(1)
                    pixel_weight = torch.where(missing, conf, torch.ones_like(conf))
        self.step_guard.check(before_student=True)  # a stop: the step is abandoned (stopping.py)
        with self._autocast():
            logits, scales = self.train_net(x_student)
        self.step_guard.check()
        warm = cfg.distill_warmup * self.total
        distill_scale = 1.0 if warm <= 0 else min(1.0, (self.iteration + 1) / warm)
        balance, target_T = target_settings(cfg.method, cfg.target_balance, cfg.target_temperature)
        loss, parts = distill_loss(
            cfg.method, logits, scales, teacher_logits, y, T=cfg.temperature, alpha=cfg.alpha, beta=cfg.beta,
            lambda_logit=cfg.lambda_logit, lambda_feat=cfg.lambda_feat, kd_weight=cfg.kd_weight,
            ds_weight=cfg.ds_weight, head_supervision=cfg.head_supervision, weights=cfg.scale_weights,
            ignore_index=IGNORE, target_T=target_T, target_balance=balance,
            pixel_weight=pixel_weight, distill_scale=distill_scale, resample=cfg.scale_resample)
        bad = torch.tensor([float(not torch.isfinite(loss).item())], device=self.device)
        if all_reduce_sum(bad, self.dist).item() > 0:
            raise TrainingError(
                f"the loss became {loss.item()} at iteration {self.iteration + 1}; training stopped and the "
                f"last good checkpoint is kept ({self.last_path if self.last_path.exists() else 'none yet'}). "
                f"Lower the learning rate (lr, now {cfg.lr:g}) or the distillation weights.")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.step_guard.check(last=True)  # the last point to abandon the step: the optimizer has not applied it
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: float(v) for k, v in parts.items()}

    def predict(self, image: np.ndarray, *, model: torch.nn.Module | None = None,
                progress=None) -> np.ndarray:
        """Class probabilities (C, *shape) of a normalized image with the student (or ``model``)."""
        net = model if model is not None else self.model
        net.eval()
        return sliding_window_predict(net, image, self.patch_size, num_classes=self.num_classes,
                                      overlap=0.5, batch_size=max(1, self.config.batch_size),
                                      device=str(self.device), progress=progress,
                                      amp=self.amp_dtype is not None)

    def _validate(self) -> Event:
        """Validate (:func:`.validation.validate`: per-class Dice, the lost-class guard's warnings, best.pt)."""
        return validation.validate(self)

    # ------------------------------------------------------------------ state
    def _save_last(self) -> Event:
        self._sampler_states = all_gather_objects(self.sampler.state_dict(), self.dist)
        if not self.dist.is_main:
            barrier(self.dist)
            return Event("checkpoint", self.iteration, self.total, message="checkpoint written by rank 0")
        path = self._write(self.last_path, with_state=True)
        barrier(self.dist)
        return Event("checkpoint", self.iteration, self.total, path=str(path),
                     message=f"checkpoint written: {path}")

    def _write(self, path: Path, with_state: bool) -> Path:
        """Write a checkpoint atomically (:func:`.state.write`); a failed write keeps the old file."""
        return state.write(self, path, with_state)

    def _emit(self, event: Event, log: bool = True) -> Event:
        if log and self._log_file is not None:
            self._log_file.write(event.to_json())
        if self._tb is not None and event.kind == "step" and log:
            for k, v in event.parts.items():
                self._tb.add_scalar(f"loss/{k}", v, event.iteration)
            self._tb.add_scalar("lr", event.lr, event.iteration)
        if self._tb is not None and event.kind == "validation" and event.mean_dice is not None:
            self._tb.add_scalar("val/mean_dice", event.mean_dice, event.iteration)
        return event
