"""Training: clip unroll, both stages, loss terms, resume after a kill, DDP, evaluation CLI.

Everything runs on CPU with tiny models (embed_dim 32, 1 layer, random encoders) on real
DAVIS-240p clips cropped to 64x64; the data folder is found by `data_paths`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from defvos_core.config import ModelConfig, TrackerConfig
from defvos_core.config_io import to_dict
from defvos_core.data.splits import HOLDOUT_SEQUENCES, resolve_split
from defvos_core.model.checkpoint import load_model, save_weights, weights_meta
from defvos_core.model.vos_model import VOSModel
from defvos_core.training.config import load_train_config
from defvos_core.training.ema import ModelEMA
from defvos_core.training.schedule import lr_factor
from defvos_core.training.unroll import (labels_to_soft_mask, masked_probabilities,
                                         unroll_clip)

from data_paths import DAVIS as DATA, REPO, missing
TINY_TEACHER = REPO / "config" / "training" / "tiny_cpu_teacher.yaml"
TINY_STUDENT = REPO / "config" / "training" / "tiny_cpu_student.yaml"
needs_data = pytest.mark.skipif(bool(missing(DATA)), reason=missing(DATA))
CHILD_ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
             "PYTHONUNBUFFERED": "1"}

torch.set_num_threads(2)


def tiny_model_config(**overrides) -> ModelConfig:
    values = dict(encoder="lite0", pretrained_encoder=False, embed_dim=32, num_layers=1,
                  num_heads=1, max_objects=3, sample_grid=(2, 2), short_term_radius=1,
                  decoder_dim=16)
    values.update(overrides)
    return ModelConfig(**values)


def tiny_config(tmp_path: Path, *overrides: str, stage: str = "teacher"):
    path = TINY_TEACHER if stage == "teacher" else TINY_STUDENT
    return load_train_config(path, [f"run_dir={tmp_path / 'run'}", f"data.root={DATA}",
                                    "validation.enabled=false", *overrides])


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory) -> Path:
    """Write a tiny random 'teacher' weights file (distillation only needs its outputs)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_weights(VOSModel(tiny_model_config()), path, meta={"trained": False})
    return path


def random_clip(batch=2, frames=3, size=64, objects=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, frames, 3, size, size, generator=generator)
    labels = torch.randint(0, objects + 1, (batch, frames, size, size), generator=generator)
    labels[:, :, :4, :4] = 255
    return images, labels, torch.full((batch,), objects, dtype=torch.long)


# ------------------------------------------------------------------------------ unroll

def test_labels_to_soft_mask_treats_void_as_background():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4] = 2
    labels[0, 4:, 4:] = 255
    mask = labels_to_soft_mask(labels, 4)  # (1, 4, 2, 2)
    assert mask.shape == (1, 4, 2, 2)
    assert torch.allclose(mask.sum(1), torch.ones(1, 2, 2))
    assert mask[0, 2, 0, 0] == 1 and mask[0, 0, 1, 1] == 1
    with pytest.raises(ValueError, match="max_objects"):
        labels_to_soft_mask(torch.full((1, 8, 8), 5), 4)


def test_masked_probabilities_zero_invalid_slots():
    logits = torch.randn(2, 4, 3, 3)
    probabilities = masked_probabilities(logits, torch.tensor([1, 3]))
    assert torch.allclose(probabilities.sum(1), torch.ones(2, 3, 3))
    assert torch.all(probabilities[0, 2:] == 0) and torch.all(probabilities[1] > 0)


def test_unroll_shapes_and_gradients_reach_the_model():
    torch.manual_seed(0)
    config = tiny_model_config(num_layers=2, num_heads=2)
    model = VOSModel(config).train()
    frames, labels, num_objects = random_clip()
    first = labels_to_soft_mask(labels[:, 0], config.num_slots)
    outputs = unroll_clip(model, frames, first, num_objects)
    assert len(outputs) == 2
    groups = config.sample_grid[0] * config.sample_grid[1]
    for t, output in enumerate(outputs, start=1):
        assert output.logits.shape == (2, config.num_slots, 64, 64)
        assert output.stride4_logits.shape == (2, config.num_slots, 16, 16)
        assert output.query_grid == (4, 4)
        assert len(output.attention_maps) == 2
        # long-term memory of frame t = frames 0..t-1: t * G sampled keys per query
        assert output.attention_maps[0].shape == (2, 2, 16, t * groups)
    loss = sum(o.logits.logsumexp(1).mean() - o.logits[:, 1].mean() for o in outputs)
    loss.backward()
    for name in ("encoder._conv_stem.weight", "project.0.weight",
                 "identity_bank.embed", "propagation.memory_identity.weight",
                 "propagation.layers.0.query.weight", "decoder"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None for g in grads), name
        assert any(float(g.abs().sum()) > 0 for g in grads), name


def test_unroll_rejects_sizes_off_the_stride():
    model = VOSModel(tiny_model_config())
    frames, labels, num_objects = random_clip(size=72)
    with pytest.raises(ValueError, match="multiples of 16"):
        unroll_clip(model, frames, torch.zeros(2, 4, 18, 18), num_objects)


# ------------------------------------------------------------------------ small parts

def test_lr_schedule_warmup_then_decay():
    factors = [lr_factor(step, 100, 10, "poly") for step in range(100)]
    assert factors[0] < factors[5] < factors[9] < 1.0
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(99, 100, 10, "cosine") < 0.01
    assert lr_factor(50, 100, 0, "cosine", min_lr_ratio=0.1) == pytest.approx(0.55)
    assert lr_factor(80, 100, 10, "constant") == 1.0


def test_lr_schedule_follows_the_time_budget_when_it_is_further_along():
    assert lr_factor(20, 1000, 10, "poly", time_fraction=1.0) == 0.0
    assert lr_factor(20, 1000, 10, "cosine", time_fraction=0.5) == pytest.approx(0.5)
    assert lr_factor(20, 1000, 10, "poly", time_fraction=0.0) == pytest.approx(
        lr_factor(20, 1000, 10, "poly"))
    assert lr_factor(5, 1000, 10, "poly", time_fraction=0.9) == pytest.approx(6 / 11)  # warm-up


def test_ema_moves_towards_the_weights():
    model = torch.nn.Linear(2, 2)
    ema = ModelEMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.model.weight.clone()
    ema.update(model)
    assert torch.all(ema.model.weight > before)
    assert torch.all(ema.model.weight < model.weight)
    state = ema.state_dict()
    other = ModelEMA(torch.nn.Linear(2, 2), 0.9)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.model.weight, ema.model.weight)


def test_ema_averages_floats_and_copies_integer_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(model, 0.9)
    start = ema.model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    decay = 2 / 11  # the warm-up value min(0.9, (1 + 1) / (10 + 1))
    assert torch.allclose(ema.model[0].weight, decay * start + (1 - decay) * 1.0)
    assert int(ema.model[1].num_batches_tracked) == 7


def test_configs_load_with_presets_and_overrides():
    folder = REPO / "config" / "training"
    names = {p.name for p in folder.glob("*.yaml")}
    assert {"teacher.yaml", "student.yaml", "tiny_cpu_teacher.yaml",
            "tiny_cpu_student.yaml"} <= names
    for path in folder.glob("*.yaml"):
        config = load_train_config(path)
        assert config.stage in ("teacher", "student", "static"), path
        assert set(HOLDOUT_SEQUENCES) <= set(config.data.holdout), path
    teacher = load_train_config(folder / "teacher.yaml")
    assert (teacher.model.encoder, teacher.model.num_layers) == ("lite2", 3)
    student = load_train_config(folder / "student.yaml", ["distill.intra=0", "optim.lr=1e-3"])
    assert (student.model.encoder, student.model.num_layers) == ("lite0", 1)
    assert student.distill.intra == 0 and student.optim.lr == 1e-3
    as_student = load_train_config(folder / "teacher.yaml", ["model_preset=student"])
    assert as_student.stage == "teacher" and as_student.model.encoder == "lite0"
    with pytest.raises(ValueError, match="unknown keys"):
        load_train_config(folder / "teacher.yaml", ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="multiples of 16"):
        load_train_config(folder / "teacher.yaml", ["data.clip.crop_size=[100,100]"])
    with pytest.raises(ValueError, match="data.worker_start"):
        load_train_config(folder / "teacher.yaml", ["data.worker_start=thread"])


@needs_data
def test_splits_hold_out_the_validation_sequences(tmp_path):
    train = resolve_split(DATA, "train")
    assert len(train) == 25 and not set(train) & set(HOLDOUT_SEQUENCES)
    assert resolve_split(DATA, "val") == list(HOLDOUT_SEQUENCES)
    listing = tmp_path / "mine.txt"
    listing.write_text("bear\n\nrollerblade\n")
    assert resolve_split(DATA, str(listing)) == ["bear", "rollerblade"]
    with pytest.raises(FileNotFoundError):
        resolve_split(DATA, "nope")


# ----------------------------------------------------------------------------- stages

@needs_data
def test_teacher_stage_overfits_one_clip(tmp_path):
    from defvos_core.training.trainer import Trainer

    config = tiny_config(tmp_path, "optim.schedule=constant", "optim.warmup_steps=0",
                         "optim.lr=2e-3", "optim.encoder_lr_scale=1.0", "steps=100",
                         "loss.top_k_fraction=1.0")
    torch.manual_seed(0)
    trainer = Trainer(config)
    batch = next(iter(trainer.loader))
    assert batch["frames"].shape == (2, 3, 3, 64, 64)
    losses = [trainer.train_step(batch)["total"] for _ in range(20)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert trainer.step == 20


@needs_data
@pytest.mark.parametrize("weights, expected", [
    ((1, 1, 1, 1), {"attention", "intra", "inter", "supervised"}),
    ((1, 0, 0, 0), {"attention"}),
    ((0, 1, 0, 0), {"intra"}),
    ((0, 0, 1, 0), {"inter"}),
    ((0, 0, 0, 1), {"supervised"}),
])
def test_student_stage_loss_terms(tmp_path, teacher_weights, weights, expected):
    from defvos_core.training.trainer import Trainer

    attention, intra, inter, supervised = weights
    config = tiny_config(tmp_path, f"distill.teacher_weights={teacher_weights}",
                         f"distill.attention={attention}", f"distill.intra={intra}",
                         f"distill.inter={inter}", f"distill.supervised={supervised}",
                         stage="student")
    torch.manual_seed(0)
    trainer = Trainer(config)
    assert trainer.teacher is not None and not trainer.teacher.training
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    terms = trainer.train_step(next(iter(trainer.loader)))
    assert set(terms) - {"total", "grad_norm"} == expected
    assert np.isfinite(terms["total"]) and terms["grad_norm"] > 0
    for key, value in trainer.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key


@needs_data
def test_self_supervised_student_never_sees_later_ground_truth(tmp_path, teacher_weights):
    from defvos_core.training.trainer import Trainer

    config = tiny_config(tmp_path, f"distill.teacher_weights={teacher_weights}",
                         "distill.self_supervised=true", "distill.supervised=1.0",
                         stage="student")
    trainer = Trainer(config)
    pseudo_root = tmp_path / "run" / "pseudo_labels"
    for sequence in trainer.train_sequences:
        assert sequence.labeled_indices == list(range(len(sequence)))
        assert all(pseudo_root in path.parents for path in sequence.mask_paths.values())
    terms = trainer.train_step(next(iter(trainer.loader)))
    assert "supervised" not in terms and np.isfinite(terms["total"])


@needs_data
def test_bf16_autocast_on_cpu_trains(tmp_path):
    from defvos_core.training.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path, "amp=bf16", "ema_decay=0.5"))
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    terms = trainer.train_step(next(iter(trainer.loader)))
    assert np.isfinite(terms["total"]) and trainer.ema.updates == 1
    with pytest.raises(ValueError, match="needs CUDA"):
        Trainer(tiny_config(tmp_path, "amp=fp16", "device=cpu"))


@needs_data
def test_clips_without_objects_are_skipped_and_counted(tmp_path):
    from defvos_core.training.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path))
    batch = next(iter(trainer.loader))
    batch["labels"][0] = 0
    batch["num_objects"] = torch.tensor([0, int(batch["num_objects"][1])])
    loss, _ = trainer.compute_loss(batch)
    assert trainer.skipped_items == 1 and torch.isfinite(loss)
    batch["labels"][1] = 0
    batch["num_objects"] = torch.tensor([0, 0])
    loss, _ = trainer.compute_loss(batch)
    assert trainer.skipped_items == 3 and float(loss.detach()) == 0.0


@needs_data
def test_full_run_exports_weights_with_meta(tmp_path, teacher_weights):
    from defvos_core.training.provenance import file_sha256, provenance_problems
    from defvos_core.training.trainer import Trainer

    config = tiny_config(tmp_path, "steps=2", "validation.enabled=true",
                         "validation.max_frames=4", "ema_decay=0.9",
                         f"init_weights={teacher_weights}")
    trainer = Trainer(config)
    summary = trainer.run()
    assert summary["step"] == 2 and summary["validation"]["step"] == 2
    assert summary["time_limited"] is False
    meta = weights_meta(summary["weights"])
    assert meta["trained"] is True and meta["steps"] == 2 and meta["stage"] == "teacher"
    assert meta["train_seconds"] > 0
    assert meta["validation"]["J&F"] == summary["validation"]["J&F"]
    assert not set(meta["data"]["sequences"]) & set(HOLDOUT_SEQUENCES)
    assert meta["data"]["validation_sequences"] == ["bear"] and meta["data"]["split"] == "train"
    provenance = meta["provenance"]  # written by the trainer, nothing by hand
    assert provenance["init_weights"] == {"path": str(teacher_weights),
                                          "sha256": file_sha256(teacher_weights)}
    assert provenance["teacher"] is None and provenance["steps_done"] == 2
    assert provenance["steps_planned"] == 2 and provenance["time_limit_reached"] is False
    assert provenance["hardware"]["torch"] == torch.__version__
    assert provenance["hardware"]["device_type"] == "cpu"
    assert "pytest" in provenance["command"]
    assert provenance_problems(meta, {"init_weights": teacher_weights}) == []
    assert provenance_problems(meta, {"init_weights": summary["weights"]}) == [
        f"provenance.init_weights.sha256 does not match {summary['weights']}"]
    assert load_model(summary["weights"]).config == config.model
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


@needs_data
def test_time_limited_run_ends_its_lr_decay_and_keeps_its_clock(tmp_path):
    from defvos_core.training.trainer import Trainer

    config = tiny_config(tmp_path, "steps=1000", "time_limit_minutes=0.001",
                         "optim.time_schedule=true", "optim.warmup_steps=0")
    trainer = Trainer(config)
    summary = trainer.run()  # 0.06 s of budget: stops after a step or two
    assert summary["step"] < 1000
    assert trainer.scheduler.lr_lambdas[0](trainer.step) == 0.0  # decay finished by time
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert saved["train_seconds"] >= 0.06
    resumed = Trainer(tiny_config(tmp_path, "steps=1000", "time_limit_minutes=0.001",
                                  "optim.time_schedule=true", "optim.warmup_steps=0"),
                      resume=True)
    assert resumed.elapsed_seconds() == pytest.approx(saved["train_seconds"])
    assert resumed.run()["step"] == summary["step"] + 1  # budget already spent: one step
    assert resumed.optimizer.param_groups[0]["lr"] == 0.0  # ... taken at the final lr
    provenance = weights_meta(tmp_path / "run" / "teacher.pt")["provenance"]
    assert provenance["time_limit_reached"] is True
    assert provenance["steps_done"] == summary["step"] + 1 and provenance["steps_planned"] == 1000


@needs_data
def test_frozen_encoder_stages_keep_their_weights_and_statistics(tmp_path):
    from defvos_core.training.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path, "freeze_encoder_stages=2", "freeze_bn=false",
                                  "optim.warmup_steps=0", "optim.encoder_lr_scale=1.0"))
    encoder = trainer.model.encoder
    prefixes = ("encoder._conv_stem.", "encoder._bn0.", *(
        f"encoder._blocks.{i}." for i, stage in enumerate(encoder.block_stages) if stage < 2))
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    trainer.train_step(next(iter(trainer.loader)))
    after = trainer.model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    frozen = {name for name in before if name.startswith(prefixes)}
    assert any("running_mean" in name for name in frozen)
    assert not changed & frozen  # weights and running statistics
    later = f"encoder._blocks.{encoder.block_stages.index(2)}."
    assert any(name.startswith(later) and "running_mean" in name for name in changed)
    assert any(name.startswith(later) and name.endswith("conv.weight") for name in changed)
    assert any(name.startswith("decoder.") for name in changed)
    assert not any(p.requires_grad for p in encoder._conv_stem.parameters())
    with pytest.raises(ValueError, match="freeze_encoder_stages"):
        tiny_config(tmp_path, "freeze_encoder_stages=6")


@needs_data
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from defvos_core.training import trainer as trainer_module

    trainer = trainer_module.Trainer(tiny_config(tmp_path))
    trainer.train_step(next(iter(trainer.loader)))
    (tmp_path / "run").mkdir(exist_ok=True)
    trainer.save_checkpoint()
    path = tmp_path / "run" / "checkpoint.pt"

    def broken_save(obj, target, *args, **kwargs):
        Path(target).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    trainer.train_step(next(iter(trainer.loader)))
    with pytest.raises(OSError):
        trainer.save_checkpoint()
    monkeypatch.undo()
    state = torch.load(path, weights_only=False)
    assert state["step"] == 1
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["checkpoint.pt"]


# --------------------------------------------------------------------- kill and resume

def _train_command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "defvos_core.train", "--config", str(TINY_TEACHER),
            "--set", f"run_dir={run_dir}", "--set", f"data.root={DATA}",
            "--set", "validation.enabled=false", "--set", "steps=12",
            "--set", "checkpoint_every=2", "--set", "threads=1", *extra]


@needs_data
def test_kill_and_resume_continues_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoint.pt"
    process = subprocess.Popen(_train_command(run_dir), cwd=REPO, env=CHILD_ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "no checkpoint was written before the kill"
    killed_at = torch.load(checkpoint, weights_only=False)["step"]  # never half-written
    assert killed_at % 2 == 0 and 2 <= killed_at <= 12

    result = subprocess.run(_train_command(run_dir, "--resume"), cwd=REPO, env=CHILD_ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    if killed_at < 12:
        assert f"resumed from {checkpoint} at step {killed_at}" in result.stdout
    summary = json.loads(result.stdout.split("result: ", 1)[1].splitlines()[0])
    assert summary["step"] == 12
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 12 and state["scheduler"]["last_epoch"] == 12
    assert state["epoch"] >= 1  # the resumed run started a new data epoch
    losses = [json.loads(line)["loss/total"]
              for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if "loss/total" in line]
    assert losses and all(np.isfinite(losses))


# -------------------------------------------------------------------------------- DDP

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from defvos_core.training.trainer import Trainer

    config = load_train_config(TINY_TEACHER, [f"run_dir={tmp}/run", f"data.root={DATA}",
                                              "validation.enabled=false", "steps=3",
                                              "threads=1"])
    trainer = Trainer(config)
    initial = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.run()
    final = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    torch.save({"initial": initial, "final": final, "step": trainer.step,
                "samples": len(trainer.loader)}, f"{tmp}/rank{rank}.pt")
    trainer.close()


@needs_data
def test_ddp_two_cpu_processes_keep_parameters_equal(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2,
                                join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    assert ranks[0]["samples"] == ranks[1]["samples"] == 2  # 8 clips / 2 ranks / batch 2
    assert torch.equal(ranks[0]["initial"], ranks[1]["initial"])  # broadcast from rank 0
    assert torch.equal(ranks[0]["final"], ranks[1]["final"])
    assert not torch.equal(ranks[0]["initial"], ranks[0]["final"])
    assert (tmp_path / "run" / "teacher.pt").is_file()


# ------------------------------------------------------------------- evaluate --weights

@needs_data
def test_evaluate_weights_mode_writes_pngs_and_scores(tmp_path, teacher_weights, capsys):
    from defvos_core.evaluate import main

    out = tmp_path / "pred"
    code = main(["--weights", str(teacher_weights), "--data", str(DATA), "--split", "val",
                 "--sequences", "bear", "--size", "64", "--out", str(out),
                 "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "p.png")])
    assert code == 0, capsys.readouterr().err
    assert len(list((out / "bear").glob("*.png"))) == 41
    summary = json.loads((tmp_path / "s.json").read_text())
    assert list(summary["sequences"]) == ["bear"] and 0 <= summary["J&F-Mean"] <= 1
    assert (tmp_path / "p.png").is_file()
    assert main(["--weights", str(teacher_weights), "--data", str(DATA),
                 "--sequences", "rollerblade"]) == 2  # not in the held-out split
    assert main(["--weights", str(teacher_weights), "--pred", str(out),
                 "--gt", str(DATA)]) == 2
    assert main(["--weights", str(teacher_weights), "--data", str(DATA), "--sequences", "bear",
                 "--backend", "onnxruntime", "--offsets"]) == 2  # offsets: torch only


# ---------------------------------------------------------------------- cross-validation

def _crossval_options(out: Path, *overrides: str):
    from defvos_core.training.crossval import CrossvalOptions

    return CrossvalOptions(out=out, data=DATA.parent, overrides=[
        "steps=2", "validation.max_frames=3", "threads=1", *overrides])


@pytest.fixture(scope="module")
def crossval_run(tmp_path_factory) -> tuple[Path, dict]:
    """Two folds of a static -> teacher chain, two steps a stage, tiny models (in-process)."""
    from defvos_core.training.crossval import run_crossval
    from defvos_core.training.recipes import chained_recipe

    if not DATA.is_dir():
        pytest.skip(f"{DATA} not available")
    recipe = chained_recipe([str(REPO / "config" / "training" / "tiny_cpu_static.yaml"),
                             str(TINY_TEACHER)])
    recipe.folds = [0, 1]
    out = tmp_path_factory.mktemp("crossval")
    return out, run_crossval(recipe, _crossval_options(out))


def test_crossval_validates_each_fold_on_its_own_sequences(crossval_run):
    from defvos_core.data.folds import FOLDS
    from defvos_core.training.provenance import file_sha256, provenance_problems

    out, report = crossval_run
    assert json.loads((out / "crossval.json").read_text()) == report
    assert report["format"] == "defvos-crossval-v1" and report["recipe"]["folds"] == [0, 1]
    assert [record["fold"] for record in report["folds"]] == [0, 1]
    for record in report["folds"]:
        fold = record["fold"]
        assert record["validation_sequences"] == list(FOLDS[fold])
        for name in ("static", "teacher"):
            stage = record["stages"][name]
            assert stage["validation_sequences"] == list(FOLDS[fold])
            assert stage["train_sequences"] and not set(stage["train_sequences"]) & set(
                FOLDS[fold])
            assert set(stage["sequences"]) == set(FOLDS[fold]) and stage["steps"] == 2
            assert "data.split=train-fold%d" % fold in stage["command"]
            weights = out / f"fold{fold}" / f"{name}.pt"
            assert stage["sha256"] == file_sha256(weights)
            meta = weights_meta(weights)  # the scores, written into the weights by crossval
            assert meta["crossval"]["fold"] == fold and meta["crossval"]["J&F"] == stage["J&F"]
            assert provenance_problems(meta) == []
        teacher_meta = weights_meta(out / f"fold{fold}" / "teacher.pt")
        assert teacher_meta["provenance"]["init_weights"]["sha256"] == \
            record["stages"]["static"]["sha256"]  # the fold's own static weights, as scored
    for name in ("static", "teacher"):
        values = [record["stages"][name]["J&F"] for record in report["folds"]]
        stats = report["summary"][name]["J&F"]
        assert stats["per_fold"] == values and stats["n"] == 2
        assert stats["mean"] == pytest.approx(np.mean(values))
        assert stats["std"] == pytest.approx(np.std(values, ddof=1))  # sample std
    assert "sample" in report["std"]
    table = (out / "crossval.md").read_text()
    assert table.count("\n") == 4 and "| teacher | " in table


def test_crossval_refuses_what_came_from_outside_the_fold(tmp_path, teacher_weights):
    from defvos_core.training.crossval import run_crossval, stage_config
    from defvos_core.training.recipes import Recipe, StageSpec, chained_recipe

    options = _crossval_options(tmp_path)
    student = Recipe(stages=[StageSpec("student", str(TINY_STUDENT))])
    with pytest.raises(ValueError, match="needs `teacher:`"):
        stage_config(student, student.stages[0], 0, options)
    outside = chained_recipe([str(TINY_TEACHER)], [f"init_weights={teacher_weights}"])
    with pytest.raises(ValueError, match="outside fold 0"):
        run_crossval(outside, options)
    only_validation = chained_recipe([str(TINY_TEACHER)], ["data.sequences=[rollerblade]"])
    with pytest.raises(ValueError, match="validation sequences"):
        stage_config(only_validation, only_validation.stages[0], 0, options)
    chained = chained_recipe([str(TINY_TEACHER), str(TINY_STUDENT)])
    assert (chained.stages[1].teacher, chained.stages[1].init) == ("teacher", "")
    final = stage_config(chained, chained.stages[1], None, options)
    assert final.data.split == "train" and final.data.holdout == []
    assert final.distill.teacher_weights == str(tmp_path / "final" / "teacher.pt")
    present = [str(DATA.parent / name) for name in ("ecssd", "duts-tr")
               if (DATA.parent / name).is_dir()]
    assert final.data.static.roots == present  # the still folders under --data
    (tmp_path / "fold0").mkdir()
    with pytest.raises(FileExistsError, match="--resume"):
        run_crossval(chained_recipe([str(TINY_TEACHER)]), options)


def test_crossval_evaluate_mode_scores_each_fold_with_its_own_weights(crossval_run, tmp_path):
    from defvos_core.crossval import main

    out, report = crossval_run
    path = tmp_path / "eval.json"
    code = main(["--evaluate", str(out), "--data", str(DATA.parent), "--tracker", "size=64",
                 "--tracker", "mem_every=2", "--max-frames", "3", "--json", str(path)])
    assert code == 0
    scored = json.loads(path.read_text())
    assert scored["stage"] == "teacher" and scored["tracker_overrides"] == ["size=64",
                                                                            "mem_every=2"]
    assert [record["fold"] for record in scored["folds"]] == [0, 1]
    for record, trained in zip(scored["folds"], report["folds"]):
        assert record["weights"] == str(out / f"fold{record['fold']}" / "teacher.pt")
        assert record["tracker"]["size"] == 64 and record["tracker"]["mem_every"] == 2
        assert record["frames"] == 18 and record["ms_per_frame"] > 0
        assert record["validation_sequences"] == trained["validation_sequences"]
    values = [record["J&F"] for record in scored["folds"]]
    assert scored["summary"]["J&F"]["mean"] == pytest.approx(np.mean(values))
    assert main(["--evaluate", str(out), "--stage", "nope", "--folds", "0"]) == 2


def test_crossval_sweep_scores_every_setting_on_every_fold(crossval_run, tmp_path):
    from defvos_core.crossval import main

    out, _ = crossval_run
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text('settings:\n  - ""\n  - mem_every=1 max_memory_frames=2\n'
                     '  - model.sample_grid=[1,2]\n  - model.offset_range=0\n')
    path = tmp_path / "sweep.json"
    code = main(["--evaluate", str(out), "--data", str(DATA.parent), "--sweep", str(sweep),
                 "--tracker", "size=64", "--max-frames", "3", "--json", str(path)])
    assert code == 0
    report = json.loads(path.read_text())
    assert [row["setting"] for row in report["rows"]] == [
        [], ["mem_every=1", "max_memory_frames=2"], ["model.sample_grid=[1,2]"],
        ["model.offset_range=0"]]
    assert report["base"] == ["size=64"] and report["folds"] == [0, 1]
    for row in report["rows"]:
        values = [fold["J&F"] for fold in row["folds"]]
        assert row["summary"]["J&F"]["mean"] == pytest.approx(np.mean(values))
    table = path.with_suffix(".md").read_text()
    assert "| defaults | " in table and "| model.sample_grid=[1,2] | " in table
    assert "+0.000 |" in table.splitlines()[4]  # the reference row against itself
    bad = tmp_path / "bad.yaml"
    bad.write_text("settings:\n  - model.embed_dim=8\n")
    assert main(["--evaluate", str(out), "--data", str(DATA.parent), "--sweep", str(bad),
                 "--max-frames", "2"]) == 2  # a setting that would not fit the weights


def test_the_shipped_sweep_file_is_valid_and_starts_with_the_defaults():
    from defvos_core.config_io import load_config, parse_overrides
    from defvos_core.model.checkpoint import INFERENCE_MODEL_FIELDS
    from defvos_core.training.crossval import MODEL_PREFIX
    from defvos_core.training.sweep import read_sweep

    rows = read_sweep(REPO / "config" / "inference_sweep.yaml")
    assert rows[0] == [] and len(rows) == len({tuple(row) for row in rows})
    for row in rows:
        load_config(TrackerConfig, None, [o for o in row if not o.startswith(MODEL_PREFIX)])
        model = parse_overrides([o[len(MODEL_PREFIX):] for o in row
                                 if o.startswith(MODEL_PREFIX)])
        assert set(model) <= set(INFERENCE_MODEL_FIELDS), row


def test_model_overrides_change_only_parameter_free_settings(teacher_weights):
    from defvos_core.build import build_tracker
    from defvos_core.model.checkpoint import load_model

    model = load_model(teacher_weights, overrides={"sample_grid": [2, 3],
                                                   "short_term_radius": 1})
    layer = model.propagation.layers[0]
    assert layer.sampler.sample_grid == (2, 3) and layer.radius == 1
    with pytest.raises(ValueError, match="embed_dim"):
        load_model(teacher_weights, overrides={"embed_dim": 8})
    with pytest.raises(ValueError, match="torch backend only"):
        build_tracker(teacher_weights, TrackerConfig(backend="onnxruntime"),
                      {"sample_grid": [2, 3]})


def test_provenance_problems_name_what_is_inconsistent(teacher_weights):
    from defvos_core.training.provenance import provenance_problems

    meta = {"steps": 3, "data": {"sequences": ["bear", "boat"], "holdout": ["bear"]},
            "provenance": {"steps_done": 2, "teacher": {"path": "t.pt", "sha256": "0" * 64}},
            "crossval": {"fold": 1, "validation_sequences": ["boat"]}}
    assert provenance_problems(meta, {"teacher": teacher_weights}) == [
        "data.sequences include data.holdout ['bear']", "provenance.steps_done 2 != steps 3",
        f"provenance.teacher.sha256 does not match {teacher_weights}",
        "crossval.validation_sequences are not fold 1's",
        "trained on fold 1's validation ['boat']"]


def test_recipes_resolve_for_every_fold_and_in_smoke_mode(tmp_path):
    from defvos_core.training.crossval import CrossvalOptions, stage_config
    from defvos_core.training.recipes import load_recipe, smoke_recipe

    recipes = sorted((REPO / "config" / "training" / "recipes").glob("*.yaml"))
    assert {"teacher_cv.yaml", "student_cv.yaml", "encoder_cv.yaml", "final.yaml"} <= {
        path.name for path in recipes}
    for path in recipes:
        recipe = load_recipe(path)
        for version in (recipe, smoke_recipe(recipe)):
            for fold in ([None] if version.final else version.folds):
                for stage in version.stages:
                    config = stage_config(version, stage, fold, CrossvalOptions(out=tmp_path))
                    assert config.time_limit_minutes <= 8, path
    student = load_recipe(REPO / "config" / "training" / "recipes" / "student_cv.yaml")
    assert [s.teacher for s in student.stages] == ["", "teacher", "", "teacher", "teacher",
                                                   "teacher"]
    assert not any(s.init for s in student.stages)  # every student from the same start


# ---------------------------------------------------------------------- GPU script path

def _run_gpu_run(tmp_path: Path, recipe: str, expected: list[str], **env_extra: str) -> Path:
    """Run SMOKE=1 scripts/gpu_run.sh RECIPE; check it left exactly `expected` in OUT."""
    out = tmp_path / f"out_{recipe}"
    env = {**CHILD_ENV, "SMOKE": "1", "DEFVOS_DATA": str(DATA.parent),
           "RUNS": str(tmp_path / f"runs_{recipe}"), "PYTHON": sys.executable, **env_extra}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), recipe, str(out)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir()) and len(expected) <= 8
    log = (out / "run.log").read_text()
    assert "it/s]" not in log and "s/it]" not in log  # no progress bars
    return out


@needs_data
def test_gpu_run_script_smoke_mode_student_crossval(tmp_path):
    from defvos_core.training.provenance import file_sha256

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text('settings: ["", "model.offset_range=0"]\n')
    expected = ["run.log", "crossval.json", "crossval.md", "sweep.json", "sweep.md"]
    out = _run_gpu_run(tmp_path, "student_cv", expected, SWEEP=str(sweep),
                       SWEEP_STAGE="distilled")
    swept = json.loads((out / "sweep.json").read_text())
    assert swept["stage"] == "distilled" and len(swept["rows"]) == 2
    assert "| model.offset_range=0 | " in (out / "sweep.md").read_text()
    report = json.loads((out / "crossval.json").read_text())
    assert [record["fold"] for record in report["folds"]] == [0, 1]
    runs = tmp_path / "runs_student_cv"
    for record in report["folds"]:
        stages = record["stages"]
        assert list(stages) == ["teacher", "distilled", "teacher_free", "no_attention",
                                "no_intra", "no_inter"]
        teacher = runs / f"fold{record['fold']}" / "teacher.pt"
        for name, terms in (("distilled", (1, 1, 1)), ("no_attention", (0, 1, 1)),
                            ("no_intra", (1, 0, 1)), ("no_inter", (1, 1, 0))):
            distill = stages[name]["distill"]
            assert (distill["attention"], distill["intra"], distill["inter"]) == terms
            meta = weights_meta(runs / f"fold{record['fold']}" / f"{name}.pt")
            assert meta["provenance"]["teacher"]["sha256"] == file_sha256(teacher)
        free = weights_meta(runs / f"fold{record['fold']}" / "teacher_free.pt")
        distilled = weights_meta(runs / f"fold{record['fold']}" / "distilled.pt")
        assert free["stage"] == "teacher" and distilled["stage"] == "student"
        assert free["provenance"]["init_weights"] is distilled["provenance"]["init_weights"] \
            is None  # the same start
        assert free["config"]["model"] == distilled["config"]["model"]
        assert all(0.0 <= stage["J&F"] <= 1.0 and stage["steps"] == 2
                   for stage in stages.values())
    table = (out / "crossval.md").read_text()
    assert table.count("\n") == 8 and "| no_inter | " in table
    assert "== " + str(runs / "fold1" / "log.txt") in (out / "run.log").read_text()


@needs_data
def test_gpu_run_script_smoke_mode_final_and_bad_input(tmp_path):
    from defvos_core.training.provenance import file_sha256

    out = _run_gpu_run(tmp_path, "final", ["run.log", "final.json", "static.pt",
                                           "teacher.pt", "student.pt"])
    student, teacher = weights_meta(out / "student.pt"), weights_meta(out / "teacher.pt")
    assert student["stage"] == "student" and teacher["data"]["holdout"] == []
    assert student["provenance"]["teacher"]["sha256"] == file_sha256(out / "teacher.pt")
    assert teacher["provenance"]["init_weights"]["sha256"] == file_sha256(out / "static.pt")
    assert to_dict(load_model(out / "student.pt").config)["embed_dim"] == 32
    assert "crossval" not in student  # nothing is left to validate on
    for args, message in ((["nope", str(tmp_path / "x")], "no recipe"),
                          (["final"], "usage")):
        result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), *args],
                                cwd=REPO, env=CHILD_ENV, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2 and message in result.stderr


def test_packed_device_data_loads_as_the_originals(tmp_path, monkeypatch):
    import cv2

    from defvos_core.data.ecssd import load_static_image, read_static_images
    from defvos_core.model import encoder as encoder_module
    from defvos_core.training.device_data import downscale_static_images, pack_backbone

    packed = pack_backbone("lite0", tmp_path / "pylib")  # fp16, the trunk only
    assert packed.stat().st_size < 2 * 2**20
    original = torch.load(encoder_module.imagenet_weights_path("lite0"), weights_only=True)
    monkeypatch.setattr(encoder_module, "imagenet_weights_path", lambda variant: packed)
    loaded = encoder_module.EfficientNetLiteEncoder("lite0", pretrained=True)
    loaded.drop_classifier()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key].half().to(value.dtype)), key
    trunk = torch.load(packed, weights_only=True)
    trunk.pop("_blocks.0._bn1.weight")
    torch.save(trunk, tmp_path / "broken.pth")
    monkeypatch.setattr(encoder_module, "imagenet_weights_path",
                        lambda variant: tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing"):
        encoder_module.EfficientNetLiteEncoder("lite0", pretrained=True)
    ecssd = DATA.parent / "ecssd"
    if not ecssd.is_dir():
        return
    source = tmp_path / "few"
    for folder, suffix in (("images", "jpg"), ("masks", "png")):
        (source / folder).mkdir(parents=True)
        for stem in ("0001", "0003"):
            (source / folder / f"{stem}.{suffix}").write_bytes(
                (ecssd / folder / f"{stem}.{suffix}").read_bytes())
    assert downscale_static_images(source, tmp_path / "small", short_side=160) == 2
    for item in read_static_images(tmp_path / "small"):
        image, labels = load_static_image(item)
        assert min(image.shape[:2]) == 160 and labels.shape == image.shape[:2]
        assert set(np.unique(labels)) == {0, 1}
        assert cv2.imread(str(item.image_path)) is not None
