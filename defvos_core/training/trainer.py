"""The training loop: teacher (supervised) and student (distillation) stages.

    trainer = Trainer(load_train_config("config/training/student.yaml"), resume=True)
    summary = trainer.run()   # {"step", "validation", "weights", ...}

One process per device; under torchrun the model is wrapped in DistributedDataParallel
and only rank 0 logs, validates, checkpoints and exports. A checkpoint
(`<run_dir>/checkpoint.pt`, written atomically) holds the config, step, epoch, model,
optimizer, GradScaler, scheduler, EMA and RNG states; `resume=True` continues from it.
Resumed runs start a fresh data epoch (clips are random per (seed, index, epoch), so no
clip order is replayed).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import logging
import math
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from defvos_core.config import TrackerConfig
from defvos_core.config_io import from_dict, to_dict
from defvos_core.data.clip_dataset import make_loader
from defvos_core.data.sequences import VideoSequence, read_unlabeled, split_holdout
from defvos_core.data.roots import default_davis_root
from defvos_core.data.splits import read_named_sequences
from defvos_core.evaluation.metrics import summarize
from defvos_core.inference.backend import TorchBackend
from defvos_core.inference.tracker import Tracker
from defvos_core.model.checkpoint import (DEFAULT_TEACHER_WEIGHTS, atomic_torch_save,
                                          load_model, save_weights)
from defvos_core.model.vos_model import VOSModel
from defvos_core.training.config import TrainConfig
from defvos_core.training.datasets import (build_dataset, read_split_sequences, static_meta,
                                           validation_names)
from defvos_core.training.distributed import (DistributedContext, all_reduce_mean, barrier,
                                              cleanup, init_distributed)
from defvos_core.training.ema import ModelEMA
from defvos_core.training.losses import DistillationWeights, distillation_loss, supervised_loss
from defvos_core.training.provenance import training_provenance, utc_now, weights_link
from defvos_core.training.schedule import build_scheduler
from defvos_core.training.unroll import ClipUnroller, labels_to_soft_mask, unroll_clip

CHECKPOINT_FORMAT = "defvos-train-checkpoint-v1"
LOG = logging.getLogger("defvos.train")


def checkpoint_path(config: TrainConfig) -> Path:
    return Path(config.run_dir) / "checkpoint.pt"


def export_path(config: TrainConfig) -> Path:
    return Path(config.export.weights or Path(config.run_dir) / f"{config.stage}.pt")


def data_root(config: TrainConfig) -> Path:
    return Path(config.data.root) if config.data.root else default_davis_root()


def parameter_groups(model: VOSModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Split parameters into AdamW groups: encoder lr scaled; no weight decay on biases/norms."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = (name.startswith("encoder."), parameter.ndim <= 1)
        groups.setdefault(key, []).append(parameter)
    optim = config.optim
    return [{"params": params,
             "lr": optim.lr * (optim.encoder_lr_scale if is_encoder else 1.0),
             "weight_decay": 0.0 if no_decay else optim.weight_decay}
            for (is_encoder, no_decay), params in sorted(groups.items())]


def _summary_writer(run_dir: Path):
    """Return a TensorBoard SummaryWriter, or None (with a warning) when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        warnings.warn("tensorboard is not installed: no TensorBoard scalars are written "
                      "(metrics still go to metrics.jsonl)", stacklevel=2)
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """One training run of either stage (see the module docstring)."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        config.validate()
        self.config = config
        self.resume = resume
        self.context: DistributedContext = init_distributed(config.device)
        self.device = self.context.device
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels
        self.run_dir = Path(config.run_dir)
        self.step = 0
        self.epoch = 0
        self.skipped_items = 0
        self.last_validation: dict[str, Any] | None = None
        self.seconds_before = 0.0  # training time of earlier (resumed) runs
        self.synced_seconds = 0.0  # rank 0's training time at the last check (same on all ranks)
        self.run_started: float | None = None
        self.started = utc_now()
        self.time_limited = False  # the last run() ended at time_limit_minutes
        self.init_link: dict[str, str] | None = None  # init_weights by sha256 (provenance)
        self.teacher_link: dict[str, str] | None = None
        _seed_everything(config.seed + 1000 * self.context.rank)

        self.amp_dtype = self._amp_dtype()
        self.teacher = self._build_teacher() if config.stage == "student" else None
        self.model = self._build_model()
        self.unroller = ClipUnroller(self.model, config.detach_memory_masks)
        self.wrapped: torch.nn.Module = self.unroller
        if self.context.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.unroller, device_ids=device_ids)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, config),
                                           betas=tuple(config.optim.betas))
        timed = config.optim.time_schedule and config.time_limit_minutes > 0
        self.scheduler = build_scheduler(self.optimizer, config.optim, config.steps,
                                         self._time_fraction if timed else None,
                                         config.restart_step)
        self.step = config.restart_step  # a checkpoint (resume) replaces it
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.ema = ModelEMA(self.model, config.ema_decay) \
            if config.ema_decay > 0 and self.context.is_main else None
        self.weights = DistillationWeights(
            config.distill.attention, config.distill.intra, config.distill.inter,
            0.0 if config.distill.self_supervised else config.distill.supervised,
            config.distill.temperature)

        self.train_sequences, self.validation_sequences = self._sequences()
        clip = copy.deepcopy(config.data.clip)
        clip.max_objects = min(clip.max_objects, config.model.max_objects)
        self.dataset = build_dataset(config, self.train_sequences, clip)
        self.loader = make_loader(self.dataset, config.batch_size, config.data.num_workers,
                                  shuffle=True, distributed=self.context.enabled,
                                  seed=config.seed, worker_start=config.data.worker_start)
        if resume:
            self._load_checkpoint()
        self.writer = None

    # ------------------------------------------------------------------------- building
    def _log(self, text: str) -> None:
        if self.context.is_main:
            LOG.info(text)

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.config.amp
        if amp == "auto":
            return torch.float16 if self.device.type == "cuda" else None
        if amp == "fp16":
            if self.device.type != "cuda":
                raise ValueError("amp=fp16 needs CUDA; use amp=bf16 or amp=none on CPU")
            return torch.float16
        return torch.bfloat16 if amp == "bf16" else None

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _build_model(self) -> VOSModel:
        config = self.config
        model_config = copy.deepcopy(config.model)
        if config.init_weights:
            model_config.pretrained_encoder = False  # every weight comes from the file
        model = VOSModel(model_config)
        if config.init_weights:
            self.init_link = weights_link(config.init_weights)
            loaded = load_model(config.init_weights)
            if to_dict(loaded.config) | {"pretrained_encoder": False} \
                    != to_dict(model_config) | {"pretrained_encoder": False}:
                raise ValueError(f"init_weights {config.init_weights}: its model config "
                                 f"{to_dict(loaded.config)} differs from model "
                                 f"{to_dict(model_config)}")
            model.load_state_dict(loaded.state_dict())
            self._log(f"model initialised from {config.init_weights}")
        if config.freeze_bn:
            model.encoder.freeze_batchnorm()
        if config.freeze_encoder_stages:
            model.encoder.freeze_stages(config.freeze_encoder_stages)
        model.to(self.device).train()
        if self.teacher is not None and self.teacher.config.num_slots != model.config.num_slots:
            raise ValueError(f"teacher has {self.teacher.config.max_objects} ID slots, the "
                             f"student {model.config.max_objects}: distillation needs equal "
                             "model.max_objects")
        self._log(f"{config.stage} model: {model.parameter_count() / 1e6:.2f} M parameters, "
                  f"config {to_dict(model.config)}")
        return model

    def _build_teacher(self) -> VOSModel:
        path = Path(self.config.distill.teacher_weights or DEFAULT_TEACHER_WEIGHTS)
        self.teacher_link = weights_link(path)
        teacher = load_model(path, self.device).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        self._log(f"frozen teacher from {path}: {teacher.parameter_count() / 1e6:.2f} M "
                  f"parameters")
        return teacher

    def _sequences(self) -> tuple[list[VideoSequence], list[VideoSequence]]:
        data = self.config.data
        root = data_root(self.config)
        everything = read_split_sequences(root, data.split, data.resolution)
        validation_list = validation_names(root, self.config.validation)
        self.validated_names = validation_list
        self.excluded_names = list(dict.fromkeys(data.holdout + validation_list))
        holdout = [s.name for s in everything if s.name in set(self.excluded_names)]
        train, _ = split_holdout(everything, holdout)
        if data.sequences:
            leaked = sorted(set(data.sequences) & set(self.excluded_names))
            if leaked:
                raise ValueError(f"data.sequences {leaked} are held out (data.holdout) or "
                                 f"validated on")
            train = [s for s in train if s.name in set(data.sequences)]
        if not train:
            raise ValueError(f"{root}: no training sequences left after the holdout")
        extra = []
        for entry in data.unlabeled:
            source, _, seed_mask = entry.partition("::")
            sequence = read_unlabeled(source)
            if seed_mask:
                sequence.mask_paths = {0: Path(seed_mask)}
            extra.append(sequence)
        if self.config.stage == "student" and self.config.distill.self_supervised:
            train = self._pseudo_labelled(train + extra)
        elif extra:
            train = train + extra
        validation = []
        if self.config.validation.enabled and self.context.is_main:
            validation = read_named_sequences(root, validation_list, data.resolution)
        self._log(f"data {root}: {len(train)} training sequences, "
                  f"{len(validation)} validation sequences {[s.name for s in validation]}")
        return train, validation

    def _pseudo_labelled(self, sequences: list[VideoSequence]) -> list[VideoSequence]:
        from defvos_core.training.pseudo_labels import pseudo_label_sequences

        weights = Path(self.config.distill.teacher_weights or DEFAULT_TEACHER_WEIGHTS)
        stat = weights.stat()
        tag = f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.config.data.resolution}"
        cache = self.run_dir / "pseudo_labels"
        if self.context.is_main:
            tracker = Tracker(TorchBackend(copy.deepcopy(self.teacher), self.device),
                              TrackerConfig(size=None, device=str(self.device)))
            labelled, skipped = pseudo_label_sequences(tracker, sequences, cache, tag,
                                                       log=self._log)
            self._log(f"self-supervised: {len(labelled)} sequences labelled by the teacher, "
                      f"{skipped} skipped without a first-frame mask")
        barrier(self.context)
        if not self.context.is_main:  # the files exist now; read them without the tracker
            labelled, _ = pseudo_label_sequences(None, sequences, cache, tag, log=lambda _: None)
        if not labelled:
            raise ValueError("self-supervised: no training sequence has a first-frame mask")
        return labelled

    # ------------------------------------------------------------------------ checkpoint
    def _checkpoint(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "config": to_dict(self.config),
                "step": self.step, "epoch": self.epoch, "skipped_items": self.skipped_items,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": _rng_state(), "validation": self.last_validation,
                "train_seconds": self.elapsed_seconds()}

    def save_checkpoint(self) -> None:
        if self.context.is_main:
            atomic_torch_save(self._checkpoint(), checkpoint_path(self.config))

    def _load_checkpoint(self) -> None:
        path = checkpoint_path(self.config)
        if not path.is_file():
            self._log(f"--resume: no checkpoint at {path}; starting from step 0")
            return
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a defvos training checkpoint")
        saved = from_dict(TrainConfig, state["config"])
        if to_dict(saved.model) != to_dict(self.config.model) or saved.stage != self.config.stage:
            raise ValueError(f"{path}: checkpoint of stage {saved.stage!r} with model "
                             f"{to_dict(saved.model)} does not match this config")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"]) + 1  # a fresh epoch: no clip order is replayed
        self.skipped_items = int(state.get("skipped_items", 0))
        self.seconds_before = float(state.get("train_seconds", 0.0))
        self.synced_seconds = self.seconds_before
        self.last_validation = state.get("validation")
        if self.context.is_main:
            _set_rng_state(state["rng"])
        else:
            _seed_everything(self.config.seed + 1000 * self.context.rank + self.step)
        self._log(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------------------ loss
    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch, averaged over the clip's frames 1..T-1."""
        frames = batch["frames"].to(self.device, non_blocking=True)  # (B, T, 3, H, W)
        labels = batch["labels"].to(self.device, non_blocking=True)  # (B, T, H, W)
        num_objects = torch.as_tensor(batch["num_objects"], device=self.device)  # (B,)
        keep = num_objects > 0  # a clip without a first-frame object cannot be tracked
        scale = 1.0
        if not bool(keep.all()):
            self.skipped_items += int((~keep).sum())
            if bool(keep.any()):
                frames, labels, num_objects = frames[keep], labels[keep], num_objects[keep]
            else:
                scale = 0.0  # still run the graph: DDP ranks must all reduce gradients
        slots = self.model.config.num_slots
        first_mask = labels_to_soft_mask(labels[:, 0], slots)  # (B, S+1, H/4, W/4)
        with self._autocast():
            outputs = self.wrapped(frames, first_mask, num_objects)
            teacher_outputs = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_outputs = unroll_clip(self.teacher, frames, first_mask, num_objects)
        terms: dict[str, float] = {}
        total = None
        for t, output in enumerate(outputs, start=1):
            if teacher_outputs is None:
                loss = supervised_loss(output.logits, labels[:, t], num_objects,
                                       self.config.loss.top_k_fraction, self._mining_ratio())
                report = {"supervised": float(loss.detach())}
            else:
                frame_labels = None if self.config.distill.self_supervised else labels[:, t]
                loss, report = distillation_loss(output, teacher_outputs[t - 1], self.weights,
                                                 frame_labels, num_objects,
                                                 self.config.loss.top_k_fraction,
                                                 self._mining_ratio())
                report.pop("total")
            total = loss if total is None else total + loss
            for name, value in report.items():
                terms[name] = terms.get(name, 0.0) + value / len(outputs)
        total = total / len(outputs) * scale
        terms["total"] = float(total.detach())
        return total, terms

    def _mining_ratio(self) -> float:
        mining = self.config.loss.mining_steps
        return 1.0 if mining <= 0 else min(1.0, self.step / mining)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimizer step; returns the loss terms and the gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.compute_loss(batch)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        terms["grad_norm"] = float(grad_norm)
        return terms

    # ------------------------------------------------------------------------ validation
    def validate(self) -> dict[str, Any] | None:
        """Held-out J&F through the tracker (rank 0); other ranks wait at a barrier."""
        summary = None
        if self.context.is_main and self.validation_sequences:
            from defvos_core.evaluation.tracking import score_sequences

            model = copy.deepcopy(self.ema.model if self.ema is not None else self.model)
            tracker = Tracker(TorchBackend(model.float(), self.device),
                              TrackerConfig(size=self.config.validation.size,
                                            device=str(self.device)))
            started = time.perf_counter()
            results = score_sequences(tracker, self.validation_sequences,
                                      self.config.validation.max_frames)
            summary = summarize(results)
            self.last_validation = {"step": self.step, "J&F": summary["J&F-Mean"],
                                    "J": summary["J-Mean"], "F": summary["F-Mean"],
                                    "sequences": {name: row["J&F"] for name, row
                                                  in summary["sequences"].items()}}
            self._log(f"validation at step {self.step}: J&F {summary['J&F-Mean']:.4f} "
                      f"(J {summary['J-Mean']:.4f}, F {summary['F-Mean']:.4f}) in "
                      f"{time.perf_counter() - started:.0f} s")
            self._record({"validation/J&F": summary["J&F-Mean"],
                          "validation/J": summary["J-Mean"], "validation/F": summary["F-Mean"]})
        barrier(self.context)
        return self.last_validation

    # ------------------------------------------------------------------------------ run
    def _record(self, scalars: dict[str, float]) -> None:
        if not self.context.is_main:
            return
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, self.step)
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps({"step": self.step, **scalars}) + "\n")

    def elapsed_seconds(self) -> float:
        """Training time so far, earlier resumed runs included (this rank's clock)."""
        now = time.perf_counter() - self.run_started if self.run_started is not None else 0.0
        return self.seconds_before + now

    def _time_fraction(self) -> float:
        """Part of `time_limit_minutes` spent (drives the lr decay with optim.time_schedule).

        Uses rank 0's clock as of the last `_out_of_time` check, so every rank steps with
        the same learning rate.
        """
        return min(1.0, self.synced_seconds / (60.0 * self.config.time_limit_minutes))

    def _out_of_time(self) -> bool:
        """Return True once `time_limit_minutes` have passed (rank 0's clock for every rank)."""
        limit = self.config.time_limit_minutes
        if limit <= 0:
            return False
        seconds = torch.tensor(self.elapsed_seconds(), dtype=torch.float64)
        if self.context.enabled:
            seconds = seconds.to(self.device)
            torch.distributed.broadcast(seconds, src=0)
        self.synced_seconds = float(seconds)
        return self.synced_seconds > 60.0 * limit

    def export(self, path: Path | None = None) -> Path:
        """Write the weights-only fp16 file (EMA weights if enabled) with training metadata.

        To `path`, else `export.weights` (default `<run_dir>/<stage>.pt`).
        """
        path = path or export_path(self.config)
        if self.context.is_main:
            model = self.ema.model if self.ema is not None and self.config.export.use_ema \
                else self.model
            config = self.config
            meta = {"trained": True, "stage": config.stage, "steps": self.step,
                    "config": to_dict(config),
                    "data": {"root": data_root(config).name, "split": config.data.split,
                             "sequences": [s.name for s in self.train_sequences],
                             "holdout": self.excluded_names,
                             "validation_sequences": self.validated_names,
                             **static_meta(config)},
                    "validation": self.last_validation,
                    "train_seconds": round(self.elapsed_seconds(), 1),
                    "world_size": self.context.world_size,
                    "provenance": training_provenance(
                        init=self.init_link, teacher=self.teacher_link, device=self.device,
                        world_size=self.context.world_size, amp=self.amp_dtype,
                        steps_done=self.step, steps_planned=config.steps,
                        time_limit_minutes=config.time_limit_minutes,
                        time_limited=self.time_limited, started=self.started)}
            if config.stage == "student":
                meta["teacher_weights"] = str(config.distill.teacher_weights
                                              or DEFAULT_TEACHER_WEIGHTS)
            save_weights(model, path, half=self.config.export.half, meta=meta)
            self._log(f"exported {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return path

    def run(self) -> dict[str, Any]:
        """Train to `config.steps`, validating, checkpointing and exporting on the way."""
        config = self.config
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config),
                                                                     sort_keys=False))
            self.writer = _summary_writer(self.run_dir)
        progress = None
        if self.context.is_main:
            from tqdm import tqdm

            progress = tqdm(total=config.steps, initial=self.step, desc=config.stage,
                            mininterval=5.0, dynamic_ncols=True)
        window: dict[str, float] = {}
        window_steps, data_wait = 0, 0.0  # data_wait: seconds the steps waited for batches
        step_started = self.run_started = time.perf_counter()
        out_of_time = False
        while self.step < config.steps and not out_of_time:
            self.loader.sampler.set_epoch(self.epoch)
            batch_asked = time.perf_counter()
            for batch in self.loader:
                data_wait += time.perf_counter() - batch_asked  # the loader's share
                terms = self.train_step(batch)
                for name, value in terms.items():
                    window[name] = window.get(name, 0.0) + value
                window_steps += 1
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{terms['total']:.4f}")
                if not math.isfinite(terms["total"]):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {terms}")
                if self.step % config.log_every == 0 or self.step == config.steps:
                    means = {f"loss/{k}" if k != "grad_norm" else k: v / window_steps
                             for k, v in window.items()}
                    loss = all_reduce_mean(torch.tensor(means["loss/total"], device=self.device),
                                           self.context)
                    means["loss/total"] = float(loss)
                    means["lr"] = max(group["lr"] for group in self.optimizer.param_groups)
                    means["seconds_per_step"] = (time.perf_counter() - step_started) \
                        / window_steps
                    means["clips_per_second"] = config.batch_size * self.context.world_size \
                        / means["seconds_per_step"]
                    means["data_wait_fraction"] = data_wait / (window_steps
                                                               * means["seconds_per_step"])
                    means["skipped_items"] = self.skipped_items
                    self._record(means)
                    self._log(f"step {self.step}/{config.steps} " + " ".join(
                        f"{k}={v:.4g}" for k, v in means.items()))
                    window, window_steps, data_wait = {}, 0, 0.0
                    step_started = time.perf_counter()
                if config.validation.every and self.step % config.validation.every == 0 \
                        and self.step < config.steps:
                    self.validate()
                out_of_time = self._out_of_time()
                if self.step % config.checkpoint_every == 0 or self.step == config.steps \
                        or out_of_time:
                    self.save_checkpoint()
                if config.snapshot_every and self.step % config.snapshot_every == 0:
                    self.export(self.run_dir / "snapshots" / f"step_{self.step:06d}.pt")
                if self.step >= config.steps or out_of_time:
                    break
                batch_asked = time.perf_counter()
            self.epoch += 1
        if progress is not None:
            progress.close()
        self.time_limited = out_of_time
        if out_of_time:
            self._log(f"time limit of {config.time_limit_minutes} min reached at step "
                      f"{self.step} of {config.steps}")
        if self.config.validation.enabled:
            self.validate()
            self.save_checkpoint()
        path = self.export()
        if self.writer is not None:
            self.writer.close()
        barrier(self.context)
        return {"step": self.step, "validation": self.last_validation, "weights": str(path),
                "skipped_items": self.skipped_items, "time_limited": self.time_limited,
                "train_seconds": round(self.elapsed_seconds(), 1)}

    def close(self) -> None:
        """Stop the loader's worker processes (timed: a slow stop shows in the log), then DDP."""
        started = time.perf_counter()
        self.loader = None  # drops the persistent workers' iterator, which joins them
        gc.collect()
        self._log(f"data loader workers stopped in {time.perf_counter() - started:.1f} s")
        cleanup(self.context)
