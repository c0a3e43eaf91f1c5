"""ONNX export and the onnxruntime backend: graphs, metadata, providers, parity with PyTorch."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from defvos_core.build import build_backend, build_tracker
from defvos_core.config import OnnxConfig, TrackerConfig
from defvos_core.data.masks import read_label_map
from defvos_core.data.video_io import list_frame_files, read_rgb
from defvos_core.export import main as export_main
from defvos_core.inference.backend import TorchBackend
from defvos_core.inference.tracker import Tracker
from defvos_core.model.checkpoint import (DEFAULT_STUDENT_WEIGHTS, file_sha256, load_model,
                                          save_weights)
from defvos_core.model.propagation import MemoryTensors
from defvos_core.onnx.graphs import SEGMENT_INPUTS, check_graph, read_metadata
from defvos_core.onnx.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderError,
    create_session,
    profile_option,
    provider_options,
    select_providers,
)
from defvos_core.onnx.runtime import OnnxBackend
from tracker_helpers import iou, SpyBackend

SAMPLE = DEFAULT_STUDENT_WEIGHTS.parent / "sample" / "bear"
NUM_FRAMES = 20
SECOND_SEED_AT = 10
CONFIG = TrackerConfig()  # the defaults: short side 240, the clip's own size (240x427)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One compute thread per backend: the CI machines' few cores are shared by many jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def session_options():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return options


def onnx_config(config: TrackerConfig = CONFIG, fp16: bool = False, **onnx_options
                ) -> TrackerConfig:
    """Return `config` on the onnxruntime backend with these OnnxConfig fields."""
    onnx_options = {key: str(value) if isinstance(value, Path) else value
                    for key, value in onnx_options.items()}
    return replace(config, backend="onnxruntime", fp16=fp16, onnx=OnnxConfig(**onnx_options))


def onnx_backend(weights=None, config: TrackerConfig = CONFIG, fp16: bool = False,
                 **onnx_options) -> OnnxBackend:
    """Return `weights` (the shipped student) on onnxruntime, one thread."""
    return build_backend(weights, onnx_config(config, fp16, **onnx_options),
                         session_options=session_options())


@pytest.fixture(scope="module")
def clip():
    frames = [read_rgb(path) for path in list_frame_files(SAMPLE / "frames")[:NUM_FRAMES]]
    seed = read_label_map(SAMPLE / "masks" / "00000.png")
    box = np.zeros_like(seed)
    box[20:80, 20:120] = 2  # a second object, added mid-stream
    return frames, seed, box


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "student"
    assert export_main(["--out", str(out), "--size", "240x427"]) == 0
    return out


def track(tracker, clip):
    """Label maps of the clip: seed at frame 0, a box object 2 added at SECOND_SEED_AT."""
    frames, seed, box = clip
    labels = []
    for index, frame in enumerate(frames):
        if index == 0:
            result = tracker.add_objects(frame, seed)
        elif index == SECOND_SEED_AT:
            result = tracker.add_objects(frame, box)
        else:
            result = tracker.step(frame)
        labels.append(result.labels)
    return labels


class ShadowBackend(TorchBackend):
    """PyTorch drives the tracker; onnxruntime runs on the very same inputs and is compared."""

    def __init__(self, model, shadow):
        super().__init__(model)
        self.shadow = shadow
        self.diffs = {"features": 0.0, "identity": 0.0, "logits": 0.0}
        self.segment_calls = 0

    def _record(self, key, reference, candidate, relative=False):
        assert reference.shape == candidate.shape
        difference = float((reference.float() - candidate.float()).abs().max())
        if relative:  # encoder features reach ~1e2: compare to their scale
            difference /= max(1.0, float(reference.abs().max()))
        self.diffs[key] = max(self.diffs[key], difference)

    def encode(self, image):
        features = super().encode(image)
        for reference, candidate in zip(features, self.shadow.encode(image)):
            self._record("features", reference, candidate, relative=True)
        return features

    def encode_identity(self, mask):
        identity = super().encode_identity(mask)
        self._record("identity", identity, self.shadow.encode_identity(mask), relative=True)
        return identity

    def segment(self, features, memory):
        logits = super().segment(features, memory)
        self._record("logits", logits, self.shadow.segment(features, memory))
        self.segment_calls += 1
        return logits


@pytest.fixture(scope="module")
def torch_run(clip, export_dir):
    backend = ShadowBackend(load_model(None), onnx_backend(onnx_dir=export_dir))
    labels = track(Tracker(backend, CONFIG), clip)
    return labels, backend


@pytest.fixture
def defvos_log(caplog):
    """Capture the "defvos" logger, also where ROS' launch plugin stops loggers propagating."""
    logger = logging.getLogger("defvos")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


def worst_object_iou(labels_a, labels_b):
    """Lowest IoU of one object's masks in the two runs, over objects 1, 2 and all frames.

    Compared on the objects (the bear covers 12 % of the frame, the box 6 %): a fraction of
    equal pixels would pass with a sixth of an object lost.
    """
    worst = 1.0
    for a, b in zip(labels_a, labels_b):
        for object_id in (1, 2):
            union = np.count_nonzero((a == object_id) | (b == object_id))
            if union:
                worst = min(worst, np.count_nonzero((a == object_id) & (b == object_id)) / union)
    return worst


# ----------------------------------------------------------------------- graphs, metadata
def test_graphs_pass_checker_and_shape_inference(export_dir):
    shapes = {}
    for name in ("encoder", "identity", "segment"):
        inferred = check_graph(export_dir / f"{name}.onnx")
        for value in inferred.graph.output:
            shapes[value.name] = [d.dim_param or d.dim_value
                                  for d in value.type.tensor_type.shape.dim]
    assert shapes["skip4"] == [1, 24, 60, 108] and shapes["tokens"] == [1, 256, 15, 27]
    assert shapes["key"] == [1, 1, 256, 15, 27]
    assert shapes["identity"] == ["banks", 1, 256, 15, 27]
    assert shapes["logits"] == ["banks", 11, 60, 108]
    segment = onnx.load(str(export_dir / "segment.onnx"))
    inputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in segment.graph.input}
    assert list(inputs) == list(SEGMENT_INPUTS)
    assert inputs["long_key"] == [1, "memory_frames", 1, 256, 15, 27]
    assert inputs["long_id"] == ["banks", "memory_frames", 1, 256, 15, 27]
    assert inputs["short_id"] == ["banks", 1, 1, 256, 15, 27]
    assert segment.opset_import[0].version == 17


def test_metadata_records_sizes_model_and_versions(export_dir):
    metadata = read_metadata(export_dir)
    assert metadata["input_size"] == [240, 427] and metadata["padded_size"] == [240, 432]
    assert metadata["short_side"] == 240 and metadata["precision"] == "fp32"
    assert (metadata["id_slots"], metadata["num_layers"], metadata["embed_dim"]) == (10, 1, 256)
    assert set(metadata["versions"]) >= {"defvos", "torch", "onnx", "opset"}
    assert metadata["opset"] == metadata["versions"]["opset"] == 17
    assert metadata["weights"]["sha256"] == file_sha256(DEFAULT_STUDENT_WEIGHTS)
    assert metadata["io"]["segment"]["outputs"]["logits"] == ["banks", 11, 60, 108]
    assert json.loads((export_dir / "metadata.json").read_text()) == metadata


def test_segment_graph_handles_other_memory_lengths_and_bank_counts(export_dir):
    model = load_model(None)
    session = ort.InferenceSession(str(export_dir / "segment.onnx"), session_options(),
                                   providers=[CPU])
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        features = model.encode(torch.randn(1, 3, 240, 432, generator=generator))
        for frames, banks in ((1, 1), (7, 3)):
            entry = (1, 256, 15, 27)
            memory = MemoryTensors(torch.randn(1, frames, *entry, generator=generator),
                                   torch.randn(1, frames, *entry, generator=generator),
                                   torch.randn(banks, frames, *entry, generator=generator),
                                   torch.randn(1, 1, *entry, generator=generator),
                                   torch.randn(1, 1, *entry, generator=generator),
                                   torch.randn(banks, 1, *entry, generator=generator))
            expected = model.segment(features, memory).logits
            feed = dict(zip(SEGMENT_INPUTS, (t.numpy() for t in features[:3] + tuple(memory))))
            (logits,) = session.run(None, feed)
            assert logits.shape == (banks, 11, 60, 108)
            assert np.abs(logits - expected.numpy()).max() <= 1e-3


# ------------------------------------------------------------------------------------ CLI
def test_cli_missing_weights_and_bad_size_fail_with_one_line(tmp_path, capsys):
    assert export_main(["--out", str(tmp_path / "x"), "--weights", str(tmp_path / "no.pt")]) == 1
    error = capsys.readouterr().err.strip()
    assert "weights file not found" in error and "no.pt" in error and "\n" not in error
    assert export_main(["--out", str(tmp_path / "x"), "--size", "640by480"]) == 1
    error = capsys.readouterr().err.strip()
    assert "--size" in error and "HEIGHTxWIDTH" in error and "\n" not in error
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------ parity (fp32)
def test_onnx_logits_match_pytorch_on_the_same_inputs(torch_run):
    _, backend = torch_run
    assert backend.segment_calls == NUM_FRAMES - 1  # every frame after the seed (+ frame 10)
    assert backend.diffs["features"] <= 1e-4  # relative to the features' scale
    assert backend.diffs["identity"] <= 1e-4
    assert backend.diffs["logits"] <= 1e-3  # absolute


def test_onnx_tracker_labels_agree_with_pytorch(clip, export_dir, torch_run):
    torch_labels, _ = torch_run
    backend = onnx_backend(onnx_dir=export_dir)
    onnx_labels = track(Tracker(backend, CONFIG), clip)
    assert {int(i) for i in np.unique(onnx_labels[-1])} <= {0, 1, 2}
    assert 2 in onnx_labels[SECOND_SEED_AT]
    worst = worst_object_iou(onnx_labels, torch_labels)
    print(f"worst object IoU, onnxruntime fp32 vs PyTorch: {worst:.4f}")
    assert worst >= 0.99


def test_build_tracker_selects_the_onnxruntime_backend(clip, tmp_path, defvos_log):
    frames, seed, _ = clip
    caplog = defvos_log
    tracker = build_tracker(None, onnx_config(cache_dir=tmp_path),
                            session_options=session_options())
    assert tracker.backend.name == "onnxruntime"
    assert tracker.add_objects(frames[0], seed).labels.shape == seed.shape
    assert "exporting" in caplog.text and "runs on CPUExecutionProvider" in caplog.text
    folders = list((tmp_path / "onnx").iterdir())
    assert len(folders) == 1 and "240x432-fp32" in folders[0].name
    caplog.clear()
    again = build_backend(None, onnx_config(cache_dir=tmp_path))
    assert again.prepare(240, 427)["padded_size"] == [240, 432]
    assert "exporting" not in caplog.text  # the cached export is reused


def test_banks_axis_bound_follows_slots_per_bank(export_dir, tmp_path):
    """Let the TensorRT profiles take every id, `slots_per_bank` of them a bank."""
    metadata = read_metadata(export_dir)
    for slots, banks in ((0, 26), (10, 26), (3, 85), (1, 254)):  # ceil(254 ids / slots)
        backend = onnx_backend(config=replace(CONFIG, slots_per_bank=slots),
                               cache_dir=tmp_path)
        assert backend.max_banks == banks
        profiles = backend._trt_profiles(metadata)
        assert f"mask:{banks}x11x60x108" in profiles["identity"]["trt_profile_max_shapes"]
        assert f"long_id:{banks}x" in profiles["segment"]["trt_profile_max_shapes"]


def test_five_objects_in_banks_of_three_slots_track_alike_on_both_backends(clip, export_dir):
    frames, seed, _ = clip
    seed = seed.copy()
    for object_id, (top, left) in enumerate([(10, 260), (10, 340), (150, 260), (150, 340)],
                                            start=2):
        seed[top:top + 50, left:left + 60] = object_id  # beside the bear (object 1)
    config = replace(CONFIG, slots_per_bank=3)
    runs = []
    onnx = onnx_backend(config=config, onnx_dir=export_dir)
    for backend in (TorchBackend(load_model(None)), onnx):
        spy = SpyBackend(backend)
        tracker = Tracker(spy, config)
        labels = [tracker.add_objects(frames[0], seed).labels]
        labels += [tracker.step(frame).labels for frame in frames[1:6]]
        assert spy.logit_banks == [2] * 5
        assert [tracker.objects.slot_of(i) for i in range(1, 6)] == [
            (0, 1), (0, 2), (0, 3), (1, 1), (1, 2)]
        runs.append(labels)
    worst = min(iou(a == i, b == i) for a, b in zip(*runs) for i in range(1, 6))
    print(f"worst object IoU over 5 objects in 2 banks, onnxruntime vs PyTorch: {worst:.4f}")
    assert worst >= 0.98


# ------------------------------------------------------------------------ parity (fp16)
def test_fp16_export_runs_on_cpu_and_mostly_agrees(clip, tmp_path, torch_run):
    torch_labels, _ = torch_run
    backend = onnx_backend(fp16=True, cache_dir=tmp_path)
    labels = track(Tracker(backend, CONFIG), clip)
    (folder,) = (tmp_path / "onnx").iterdir()
    assert read_metadata(folder)["precision"] == "fp16"
    segment = onnx.load(str(folder / "segment.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in segment.graph.initializer)
    worst = worst_object_iou(labels, torch_labels)
    print(f"worst object IoU, onnxruntime fp16 vs PyTorch: {worst:.4f}")
    assert worst >= 0.93


# ------------------------------------------------------------------ export folder checks
def test_onnx_dir_of_another_size_weights_or_short_side_is_refused(clip, export_dir, tmp_path):
    frames, seed, _ = clip
    backend = onnx_backend(onnx_dir=export_dir)
    tracker = Tracker(backend, CONFIG)
    small = np.ascontiguousarray(frames[0][:, :300])  # short side 240, processed at 240x320
    with pytest.raises(ValueError, match="padded size 240x432.*240x320"):
        tracker.add_objects(small, seed[:, :300])
    with pytest.raises(ValueError, match="short side 240"):
        onnx_backend(config=TrackerConfig(size=120), onnx_dir=export_dir)
    with pytest.raises(ValueError, match="graphs are fp32, but fp16 was asked for"):
        onnx_backend(onnx_dir=export_dir, fp16=True)
    model = load_model(None)
    with torch.no_grad():
        model.decoder.head.bias.add_(1.0)
    save_weights(model, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other weights"):
        onnx_backend(tmp_path / "other.pt", onnx_dir=export_dir)
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        onnx_backend(onnx_dir=tmp_path)


# ------------------------------------------------------------------------------ providers
def test_default_providers_are_tensorrt_cuda_cpu_filtered_by_availability():
    assert select_providers(available=[CPU]) == [CPU]
    assert select_providers(available=["AzureExecutionProvider", CUDA, CPU]) == [CUDA, CPU]
    assert select_providers(available=[CPU, CUDA, TENSORRT]) == [TENSORRT, CUDA, CPU]
    assert select_providers("trt, cpu", available=[TENSORRT, CPU]) == [TENSORRT, CPU]
    assert select_providers([CUDA], available=[CUDA, CPU]) == [CUDA]
    assert select_providers([], available=[CUDA, CPU]) == [CUDA, CPU]  # ROS default: []


def test_missing_provider_is_a_clear_error():
    with pytest.raises(ProviderError) as error:
        select_providers(["tensorrt", "cpu"], available=[CPU, "AzureExecutionProvider"])
    message = str(error.value)
    assert "TensorrtExecutionProvider" in message and "not available" in message
    assert "available: CPUExecutionProvider, AzureExecutionProvider" in message
    assert "onnxruntime-gpu" in message


def test_tensorrt_options_and_profiles(tmp_path):
    options = provider_options(TENSORRT, trt_fp16=True, trt_engine_cache=tmp_path / "engines",
                               trt_profiles={"trt_profile_min_shapes": "mask:1x11x60x108"})
    assert options["trt_fp16_enable"] is True and options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert (tmp_path / "engines").is_dir()
    assert options["trt_profile_min_shapes"] == "mask:1x11x60x108"
    assert provider_options(CUDA, trt_fp16=True) == {} == provider_options(CPU)
    assert profile_option({"a": (1, 2), "b": [3]}) == "a:1x2,b:3"


def test_session_logs_the_provider_in_use(export_dir, defvos_log):
    caplog = defvos_log
    session = create_session(export_dir / "identity.onnx", select_providers(), strict=False)
    in_use = session.get_providers()
    assert CPU in in_use
    assert f"identity.onnx runs on {', '.join(in_use)}" in caplog.text


def test_requested_gpu_provider_that_cannot_run_is_an_error(export_dir):
    if CUDA in ort.get_available_providers():  # onnxruntime-gpu: listed, may still not start
        try:
            session = create_session(export_dir / "identity.onnx", [CUDA], strict=True)
        except ProviderError as error:
            assert "CUDAExecutionProvider" in str(error)
        else:
            assert CUDA in session.get_providers()  # a machine with a working GPU
        return
    with pytest.raises(ProviderError, match="CUDAExecutionProvider.*not available"):
        onnx_backend(providers=["cuda"], onnx_dir=export_dir)
