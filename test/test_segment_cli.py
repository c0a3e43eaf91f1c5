"""The offline CLI on real frames, and its one-line errors on bad input."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from defvos_core.config import student_config
from defvos_core.data.masks import read_label_map, write_label_map
from defvos_core.model.checkpoint import save_weights
from defvos_core.model.vos_model import VOSModel
from defvos_core.segment import main

torch.set_num_threads(1)
SAMPLE = Path(__file__).resolve().parents[1] / "defvos_core" / "assets" / "sample" / "bear"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = VOSModel(student_config(pretrained_encoder=False, embed_dim=32, decoder_dim=16))
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(model, path)
    return path


@pytest.fixture()
def clip(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted((SAMPLE / "frames").glob("*.jpg"))[:4]:
        shutil.copy(path, frames / path.name)
    return frames, SAMPLE / "masks" / "00000.png"


def test_segments_a_folder_of_frames(tmp_path, clip, tiny_weights, capsys):
    frames, seed = clip
    out = tmp_path / "out"
    code = main(["--frames", str(frames), "--seed", str(seed), "--out", str(out),
                 "--weights", str(tiny_weights), "--size", "120"])
    assert code == 0
    masks = sorted(out.glob("*.png"))
    assert [m.stem for m in masks] == ["00000", "00002", "00004", "00006"]
    first = read_label_map(masks[0])
    assert np.array_equal(first, read_label_map(seed))  # the seed frame is the seed
    assert read_label_map(masks[-1]).shape == (240, 427)
    assert (out / "overlay.mp4").stat().st_size > 0
    assert "frames/s" in capsys.readouterr().out


def expect_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_bad_input_exits_with_one_line_naming_the_file(tmp_path, clip, tiny_weights, capsys):
    frames, seed = clip
    common = ["--out", str(tmp_path / "o"), "--weights", str(tiny_weights), "--no-video"]
    expect_error(["--frames", str(tmp_path / "nope"), "--seed", str(seed)] + common,
                 "nope", capsys)
    expect_error(["--frames", str(frames), "--seed", str(tmp_path / "s.png")] + common,
                 "s.png", capsys)
    small = tmp_path / "small.png"
    write_label_map(small, np.ones((10, 10), np.uint8))
    expect_error(["--frames", str(frames), "--seed", str(small)] + common, "small.png", capsys)
    empty = tmp_path / "empty.png"
    write_label_map(empty, np.zeros((240, 427), np.uint8))
    expect_error(["--frames", str(frames), "--seed", str(empty)] + common, "no object", capsys)
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"definitely not a video")
    expect_error(["--frames", str(video), "--seed", str(seed)] + common, "broken.mp4", capsys)
    expect_error(["--frames", str(frames), "--seed", str(seed), "--out", str(tmp_path / "o"),
                  "--weights", str(tmp_path / "missing.pt")], "missing.pt", capsys)


def test_void_seed_pixels_are_background(tmp_path, clip, tiny_weights):
    frames, seed = clip
    with_void = read_label_map(seed)
    with_void[4:80, 300:400] = 255  # a void box on the wall
    with_void[100:110, :] = np.where(with_void[100:110, :] == 1, 255, 0)  # part of the bear
    void = with_void == 255
    outputs = []
    for name, label_map in (("void", with_void), ("cleaned", np.where(void, 0, with_void))):
        write_label_map(tmp_path / f"{name}.png", label_map)
        assert main(["--frames", str(frames), "--seed", str(tmp_path / f"{name}.png"),
                     "--out", str(tmp_path / name), "--weights", str(tiny_weights),
                     "--size", "120", "--no-video"]) == 0
        outputs.append([read_label_map(path) for path in sorted((tmp_path / name).glob("*.png"))])
    assert len(outputs[0]) == 4
    assert not outputs[0][0][void].any() and all(labels.max() <= 1 for labels in outputs[0])
    assert all(np.array_equal(a, b) for a, b in zip(*outputs))  # 255 is background, exactly
