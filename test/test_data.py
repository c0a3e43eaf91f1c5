"""Tests for video IO, sequence readers, clip augmentation and the training clip dataset."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defvos_core.data import clip_dataset
from defvos_core.data import sequences as sequences_module
from defvos_core.data.augment import (augment_clip, compose_objects, horizontal_flip,
                                      static_image_clip)
from defvos_core.data.clip_dataset import (ClipSamplingConfig, DecodedFrameCache,
                                           VideoClipDataset, make_loader,
                                           sample_clip_positions)
from defvos_core.data.masks import write_label_map
from defvos_core.data.sequences import (VideoSequence, read_davis, read_unlabeled,
                                        read_youtube_vos, split_holdout)
from defvos_core.data.video_io import (VideoWriter, count_frames, iter_video_frames,
                                       list_frame_files, read_rgb)
from data_paths import DAVIS, missing

DAVIS_ROOT = DAVIS
needs_davis = pytest.mark.skipif(bool(missing(DAVIS)), reason=missing(DAVIS))
SMALL = dict(crop_size=(96, 128), colour_jitter=False)


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def davis() -> list[VideoSequence]:
    if not DAVIS_ROOT.is_dir():
        pytest.skip(f"{DAVIS_ROOT} not present")
    return read_davis(DAVIS_ROOT)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _disc_clip(num_frames: int, size=(60, 80)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Synthetic clip: a red disc (label 1) moving right on a blue gradient."""
    frames, masks = [], []
    for t in range(num_frames):
        mask = np.zeros(size, np.uint8)
        cv2.circle(mask, (20 + 4 * t, 25), 10, 1, -1)
        frame = np.zeros(size + (3,), np.uint8)
        frame[..., 2] = np.linspace(0, 200, size[1], dtype=np.uint8)[None]
        frame[mask == 1] = (255, 0, 0)
        frames.append(frame)
        masks.append(mask)
    return frames, masks


# --- video_io -----------------------------------------------------------------------------

def test_list_frame_files_sorts_numerically_and_filters(tmp_path):
    for name in ("10.jpg", "2.png", "1.JPEG", "notes.txt", "3.gif"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frame_files(tmp_path)] == ["1.JPEG", "2.png", "10.jpg"]


def test_unreadable_image_and_non_video_raise_naming_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    with pytest.raises(ValueError, match="junk.mp4"):
        list(iter_video_frames(junk))
    with pytest.raises(ValueError, match="junk.mp4"):
        read_rgb(junk)
    with pytest.raises(FileNotFoundError):
        list(iter_video_frames(tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .jpg"):
        list(iter_video_frames(tmp_path / "empty"))


def test_video_writer_roundtrip_through_read_unlabeled(tmp_path, monkeypatch):
    frames = []
    for t in range(12):  # odd size 49x65 is padded to 50x66
        frame = np.zeros((49, 65, 3), np.uint8)
        frame[:, :, 1] = 40 + 10 * t
        frame[10:30, 5 + 3 * t:25 + 3 * t] = (250, 250, 250)
        frames.append(frame)
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, fps=10) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.backend in ("imageio-ffmpeg", "opencv")
    assert abs(count_frames(video) - 12) <= 1
    sequence = read_unlabeled(video, cache_dir=tmp_path / "cache")
    assert sequence.name == "clip" and not sequence.is_labeled
    assert abs(len(sequence) - 12) <= 1
    decoded = sequence.load_frame(3)
    assert decoded.shape == (50, 66, 3)
    assert np.abs(decoded[:49, :65].astype(int) - frames[3]).mean() < 12
    monkeypatch.setattr(sequences_module, "iter_video_frames",
                        lambda path: pytest.fail("decoded again instead of reusing the cache"))
    again = read_unlabeled(video, cache_dir=tmp_path / "cache")
    assert again.frame_paths == sequence.frame_paths


def test_read_unlabeled_frame_folder(tmp_path):
    for t in range(4):
        _write_rgb(tmp_path / "seq" / f"{t:05d}.jpg", np.full((30, 40, 3), 60 * t, np.uint8))
    sequence = read_unlabeled(tmp_path / "seq")
    assert sequence.name == "seq" and len(sequence) == 4 and sequence.mask_paths == {}
    assert sequence.load_frame(2).shape == (30, 40, 3)
    assert [stem for stem, _ in iter_video_frames(tmp_path / "seq")] == [
        "00000", "00001", "00002", "00003"]
    assert count_frames(tmp_path / "seq") == 4


# --- sequence readers ---------------------------------------------------------------------

@needs_davis
def test_read_davis_real_data(davis):
    assert len(davis) == 30
    assert [s.name for s in davis] == (DAVIS_ROOT / "ImageSets" / "train.txt").read_text().split()
    for sequence in davis:
        assert len(sequence) > 10 and sequence.labeled_indices == list(range(len(sequence)))
        assert sequence.load_frame(0).shape == (240, 427, 3)
    for sequence in davis[::6]:
        labels = sequence.load_label_map(len(sequence) // 2)
        assert labels.shape == (240, 427) and set(np.unique(labels)) == {0, 1}
    subset = read_davis(DAVIS_ROOT, sequences=["bear", "boat"])
    assert [s.name for s in subset] == ["bear", "boat"]
    with pytest.raises(ValueError, match="not-a-sequence"):
        read_davis(DAVIS_ROOT, sequences=["not-a-sequence"])
    with pytest.raises(FileNotFoundError, match="val.txt"):
        read_davis(DAVIS_ROOT, split="val")


def test_read_davis_2017_imagesets_layout(tmp_path):
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "train.txt").write_text("cows\n")
    for t in range(3):
        _write_rgb(tmp_path / "JPEGImages" / "480p" / "cows" / f"{t:05d}.jpg",
                   np.zeros((8, 10, 3), np.uint8))
        write_label_map(tmp_path / "Annotations" / "480p" / "cows" / f"{t:05d}.png",
                        np.full((8, 10), 2, np.uint8))
    (sequence,) = read_davis(tmp_path, resolution="480p")
    assert sequence.name == "cows" and sorted(sequence.mask_paths) == [0, 1, 2]
    assert sequence.load_label_map(1).max() == 2


def _make_youtube_vos(root: Path) -> None:
    """Two videos: 'aaa' (6 frames, masks at 00000 and 00015), 'bbb' (4 frames, 00000)."""
    split = root / "train"
    videos = {"bbb": {"objects": {"1": {"category": "cat", "frames": ["00000", "00005"]},
                                  "3": {"category": "dog", "frames": ["00000"]}}},
              "aaa": {"objects": {"1": {"category": "person", "frames": ["00000", "00015"]}}}}
    for name, count, labeled in (("aaa", 6, ("00000", "00015")), ("bbb", 4, ("00000",))):
        for t in range(count):
            _write_rgb(split / "JPEGImages" / name / f"{5 * t:05d}.jpg",
                       np.full((12, 16, 3), 20 * t, np.uint8))
        for stem in labeled:
            labels = np.zeros((12, 16), np.uint8)
            labels[2:6, 3:8] = 1
            if name == "bbb":
                labels[7:10, 9:14] = 3
            write_label_map(split / "Annotations" / name / f"{stem}.png", labels)
    (split / "meta.json").write_text(json.dumps({"videos": videos}))


def test_read_youtube_vos_sparse_annotations(tmp_path):
    _make_youtube_vos(tmp_path)
    aaa, bbb = read_youtube_vos(tmp_path)
    assert (aaa.name, len(aaa), aaa.labeled_indices, aaa.object_ids) == ("aaa", 6, [0, 3], [1])
    assert aaa.frame_stem(3) == "00015" and aaa.mask_paths[3].name == "00015.png"
    assert (bbb.name, len(bbb), bbb.labeled_indices, bbb.object_ids) == ("bbb", 4, [0], [1, 3])
    assert set(np.unique(bbb.load_label_map(0))) == {0, 1, 3}
    with pytest.raises(KeyError, match="no annotation"):
        bbb.load_label_map(2)
    write_label_map(tmp_path / "train" / "Annotations" / "aaa" / "00099.png",
                    np.zeros((12, 16), np.uint8))
    with pytest.raises(ValueError, match="00099.png"):
        read_youtube_vos(tmp_path)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        read_youtube_vos(tmp_path, split="valid")


def test_split_holdout_keeps_order_and_rejects_unknown_names():
    sequences = [VideoSequence(name, [Path(f"{name}.jpg")], {}) for name in "abcd"]
    train, holdout = split_holdout(sequences, ["c", "a"])
    assert [s.name for s in train] == ["b", "d"] and [s.name for s in holdout] == ["a", "c"]
    with pytest.raises(ValueError, match="zz"):
        split_holdout(sequences, ["zz"])


# --- augmentation ------------------------------------------------------------------------

def test_flip_is_consistent_between_frames_and_masks():
    frames, masks = _disc_clip(3)
    flipped_frames, flipped_masks = horizontal_flip(frames, masks, np.random.default_rng(0), 1.0)
    for frame, mask, flipped_frame, flipped_mask in zip(frames, masks, flipped_frames,
                                                        flipped_masks):
        assert np.array_equal(flipped_frame, frame[:, ::-1])
        assert np.array_equal(flipped_mask, mask[:, ::-1])


def test_augment_clip_keeps_labels_on_their_pixels():
    frames, masks = _disc_clip(4)
    for seed in range(5):
        out_frames, out_masks = augment_clip(frames, masks, np.random.default_rng(seed),
                                             crop_size=(48, 48), scale_range=(0.8, 1.5),
                                             flip_probability=0.5, jitter=False)
        for frame, mask in zip(out_frames, out_masks):
            assert frame.shape == (48, 48, 3) and mask.shape == (48, 48)
            red = (frame[..., 0] > 200) & (frame[..., 2] < 60)
            assert mask.any()  # the crop prefers windows that keep the object
            assert (red == (mask == 1)).mean() > 0.97


def test_compose_objects_adds_a_new_object_to_every_frame():
    clip_frames, clip_masks = _disc_clip(5)
    donor_frames, donor_masks = _disc_clip(3, size=(40, 50))
    donor_masks = [np.where(m == 1, 4, 0).astype(np.uint8) for m in donor_masks]
    originals = [m.copy() for m in clip_masks]
    for seed in range(4):
        frames, masks = compose_objects(clip_frames, clip_masks, donor_frames, donor_masks,
                                        np.random.default_rng(seed))
        assert len(frames) == 5
        for frame, mask in zip(frames, masks):
            assert frame.shape == (60, 80, 3) and set(np.unique(mask)) <= {0, 1, 2}
            assert (mask == 2).sum() > 10
        assert all(np.array_equal(a, b) for a, b in zip(clip_masks, originals))


def test_static_image_clip_preserves_mask_area():
    image = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    mask = np.zeros((80, 100), np.uint8)
    mask[25:55, 35:65] = 1
    frames, masks = static_image_clip(image, mask, 6, np.random.default_rng(1))
    assert len(frames) == len(masks) == 6 and np.array_equal(frames[0], image)
    assert not np.array_equal(frames[-1], image)
    for labels in masks:
        assert 0.65 < (labels == 1).sum() / (mask == 1).sum() < 1.5


# --- clip dataset ------------------------------------------------------------------------

def test_sample_clip_positions_gaps_and_short_sequences():
    rng = np.random.default_rng(0)
    for length in (1, 3, 5, 9, 40):
        for _ in range(20):
            positions = sample_clip_positions(length, 5, 6, rng)
            gaps = np.diff(positions)
            assert len(positions) == 5 and 0 <= positions[0] and positions[-1] < length
            assert gaps.min() >= (1 if length >= 5 else 0) and gaps.max() <= 6
            if length < 5:
                assert set(positions) == set(range(length))


@needs_davis
def test_clip_items_shapes_ranges_and_gaps(davis):
    config = ClipSamplingConfig(max_gap=4, compose_probability=0.0, crop_size=(96, 128))
    dataset = VideoClipDataset(davis, config, samples_per_epoch=40, seed=3)
    assert len(dataset) == 40
    for index in (0, 7, 33):
        item = dataset[index]
        frames, labels = item["frames"], item["labels"]
        assert frames.shape == (5, 3, 96, 128) and frames.dtype == torch.float32
        assert labels.shape == (5, 96, 128) and labels.dtype == torch.int64
        assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.std() > 0.05
        assert item["name"] == davis[index % 30].name and item["has_labels"] is True
        assert item["num_objects"] == 1 and set(labels.unique().tolist()) <= {0, 1}
        gaps = np.diff(item["frame_indices"].numpy())
        assert gaps.min() >= 1 and gaps.max() <= 4


@needs_davis
def test_clip_items_are_deterministic_per_seed_and_index(davis):
    config = ClipSamplingConfig(compose_probability=0.5, **SMALL)
    first, again = VideoClipDataset(davis, config, seed=5), VideoClipDataset(davis, config, seed=5)
    other = VideoClipDataset(davis, config, seed=6)
    a, b, c = first[4], again[4], other[4]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["frames"], c["frames"])
    assert not torch.equal(first[(1, 4)]["frames"], a["frames"])  # another epoch differs


@needs_davis
def test_compose_in_dataset_gives_consecutive_ids(davis):
    config = ClipSamplingConfig(compose_probability=1.0, **SMALL)
    dataset = VideoClipDataset(davis, config, seed=0)
    for index in range(3):
        item = dataset[index]
        k = item["num_objects"]
        assert k >= 2
        assert set(item["labels"][0].unique().tolist()) == set(range(k + 1))
        assert item["labels"].max() == k


def test_single_image_sequence_becomes_static_clip(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    labels = np.zeros((100, 120), np.uint8)
    labels[30:70, 40:80] = 7
    _write_rgb(tmp_path / "img.png", image)
    write_label_map(tmp_path / "img_mask.png", labels)
    sequence = VideoSequence("img", [tmp_path / "img.png"], {0: tmp_path / "img_mask.png"})
    config = ClipSamplingConfig(num_frames=4, scale_range=(1.0, 1.0), flip_probability=0.0,
                                compose_probability=0.0, crop_size=(100, 120),
                                colour_jitter=False)
    item = VideoClipDataset([sequence], config)[0]
    assert item["frames"].shape == (4, 3, 100, 120) and item["num_objects"] == 1
    areas = (item["labels"] == 1).sum(dim=(1, 2)).float() / (labels == 7).sum()
    assert ((areas > 0.65) & (areas < 1.5)).all()
    assert not torch.equal(item["frames"][0], item["frames"][-1])


def test_unlabeled_sequence_items_are_void(tmp_path):
    for t in range(8):
        _write_rgb(tmp_path / "raw" / f"{t:05d}.jpg", np.full((60, 80, 3), 30 * t, np.uint8))
    dataset = VideoClipDataset([read_unlabeled(tmp_path / "raw")],
                               ClipSamplingConfig(compose_probability=1.0, crop_size=(48, 64)))
    item = dataset[0]
    assert item["has_labels"] is False and item["num_objects"] == 0
    assert (item["labels"] == 255).all()
    assert (np.diff(item["frame_indices"].numpy()) >= 1).all()


@needs_davis
def test_frame_cache_avoids_decoding_again(davis, monkeypatch):
    decoded = []

    def counting_read_rgb(path):
        decoded.append(Path(path).name)
        return read_rgb(path)

    monkeypatch.setattr(clip_dataset, "read_rgb", counting_read_rgb)
    config = ClipSamplingConfig(compose_probability=0.0, **SMALL)
    cached = VideoClipDataset(davis[:2], config, seed=1)
    cached[0]
    first_pass = len(decoded)
    assert 1 <= first_pass <= 5
    cached[0]
    assert len(decoded) == first_pass and cached.cache.hits > 0
    uncached = VideoClipDataset(davis[:2], ClipSamplingConfig(cache_frames=False, **SMALL),
                                seed=1)
    uncached[0]
    uncached[0]
    assert len(decoded) >= first_pass + 2 * 5


def test_decoded_frame_cache_respects_its_byte_budget():
    cache = DecodedFrameCache(max_bytes=2500)
    for key in range(4):
        cache.get(key, lambda: np.zeros(1000, np.uint8))
    assert len(cache) == 2 and cache.bytes_used == 2000
    cache.get(3, lambda: pytest.fail("key 3 should be cached"))
    with pytest.raises(ValueError):  # cached arrays are read-only
        cache.get(3, lambda: None)[0] = 1


@needs_davis
def test_flip_probability_mirrors_whole_items(davis):
    def item(flip):
        config = ClipSamplingConfig(compose_probability=0.0, flip_probability=flip,
                                    crop_size=(96, 128))
        return VideoClipDataset(davis, config, seed=2)[11]

    plain, mirrored = item(0.0), item(1.0)
    assert torch.equal(mirrored["frames"], plain["frames"].flip(-1))
    assert torch.equal(mirrored["labels"], plain["labels"].flip(-1))


@needs_davis
def test_make_loader_batches_and_epochs(davis):
    config = ClipSamplingConfig(num_frames=3, compose_probability=0.5, **SMALL)
    dataset = VideoClipDataset(davis[:4], config, samples_per_epoch=4, seed=0)
    loader = make_loader(dataset, batch_size=2, num_workers=1, shuffle=True)
    loader.sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert batch["frames"].shape == (2, 3, 3, 96, 128)
    assert batch["labels"].shape == (2, 3, 96, 128) and batch["labels"].dtype == torch.int64
    assert batch["num_objects"].shape == (2,) and batch["has_labels"].dtype == torch.bool
    assert len(batch["name"]) == 2 and batch["frame_indices"].shape == (2, 3)
    loader.sampler.set_epoch(1)
    epoch1_first = next(iter(loader))
    expected = [dataset[key] for key in list(loader.sampler)[:2]]  # (epoch 1, index) keys
    assert all(key[0] == 1 for key in loader.sampler)
    for row, reference in enumerate(expected):  # the persistent worker saw epoch 1
        assert torch.equal(epoch1_first["frames"][row], reference["frames"])


@needs_davis
def test_forkserver_workers_give_the_in_process_items(davis):
    """Workers started by a forkserver get the pickled dataset (empty cache), same items."""
    config = ClipSamplingConfig(num_frames=2, compose_probability=0.5, **SMALL)
    dataset = VideoClipDataset(davis[:3], config, samples_per_epoch=4, seed=3)
    dataset[0]  # fill the parent's cache: it must not travel to the workers
    loader = make_loader(dataset, batch_size=2, num_workers=1, shuffle=True,
                         worker_start="forkserver")
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    loader.sampler.set_epoch(0)
    batch = next(iter(loader))
    expected = [dataset[key] for key in list(loader.sampler)[:2]]
    for row, reference in enumerate(expected):
        assert torch.equal(batch["frames"][row], reference["frames"])
        assert torch.equal(batch["labels"][row], reference["labels"])


def test_worker_start_method_auto_and_unknown(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert clip_dataset.worker_context("auto").get_start_method() == "fork"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert clip_dataset.worker_context("auto").get_start_method() == "forkserver"
    assert clip_dataset.worker_context("spawn").get_start_method() == "spawn"
    with pytest.raises(ValueError, match="worker start method"):
        clip_dataset.worker_context("thread")
