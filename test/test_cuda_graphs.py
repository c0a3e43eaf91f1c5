"""CUDA-graph bookkeeping on a CPU: static buffers, the per-shape cache, reuse, invalidation.

The capture itself needs CUDA; everything around it runs here with an eager call in place of
the replay (`capture=False`), and must give the eager results.
"""

import numpy as np
import torch

from defvos_core.config import TrackerConfig, student_config
from defvos_core.inference.backend import TorchBackend
from defvos_core.inference.cuda_graphs import GraphCache, GraphedModel, StaticCall
from defvos_core.inference.tracker import Tracker
from defvos_core.model.vos_model import VOSModel

torch.set_num_threads(1)


def scale_and_shift(values: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor]:
    return (values * 2 + shift.sum(),)


def test_a_shape_is_served_eagerly_until_it_repeats_then_from_static_buffers():
    cache = GraphCache(scale_and_shift, capture=False, capture_after=3)
    shift = torch.ones(4)
    for call in range(5):
        values = torch.full((2, 3), float(call))
        (out,) = cache(values, shift)
        assert torch.allclose(out, values * 2 + 4)
    assert (cache.eager_calls, cache.captures, cache.static_calls) == (2, 1, 3)


def test_outputs_are_fresh_tensors_not_the_static_buffers():
    cache = GraphCache(scale_and_shift, capture=False, capture_after=1)
    (first,) = cache(torch.zeros(3), torch.zeros(1))
    cache(torch.ones(3), torch.zeros(1))
    assert torch.equal(first, torch.zeros(3))


def test_each_shape_key_has_its_own_entry_and_the_oldest_is_dropped():
    cache = GraphCache(scale_and_shift, capture=False, capture_after=2, max_entries=2)
    shift = torch.zeros(1)
    for length in (3, 4, 5):  # the memory growing: a new key each time
        for _ in range(2):
            (out,) = cache(torch.ones(length), shift)
            assert torch.equal(out, torch.full((length,), 2.0))
    assert cache.captures == 3
    assert [key[0][0] for key in cache.entries] == [(4,), (5,)]
    (out,) = cache(torch.ones(4), shift)  # a kept key is served at once, even after a change
    assert cache.static_calls == 4 and torch.equal(out, torch.full((4,), 2.0))


def test_a_reusable_input_is_copied_only_when_it_is_another_tensor():
    cache = GraphCache(scale_and_shift, capture=False, capture_after=1, reuse=(1,))
    long_term = torch.ones(8)
    for call in range(4):
        cache(torch.full((2,), float(call)), long_term)
    (entry,) = cache.entries.values()
    assert entry.copies == 1 + 4  # the first copy of long_term, then only the values
    rebuilt = torch.full((8,), 2.0)  # the memory changed: a new stacked tensor
    (out,) = cache(torch.zeros(2), rebuilt)
    assert torch.equal(out, torch.full((2,), 16.0))


def test_a_failed_capture_leaves_the_function_eager(monkeypatch):
    def refuse(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(StaticCall, "_capture", refuse)
    cache = GraphCache(scale_and_shift, capture=True, capture_after=2)
    for call in range(4):
        (out,) = cache(torch.full((3,), float(call)), torch.zeros(1))
        assert torch.equal(out, torch.full((3,), 2.0 * call))
    assert cache.failed.startswith("operation not permitted") and not cache.entries
    assert (cache.eager_calls, cache.static_calls) == (4, 0)


def tiny_model():
    torch.manual_seed(0)
    config = student_config(pretrained_encoder=False, embed_dim=32, decoder_dim=16,
                            sample_grid=(2, 3), short_term_radius=1)
    return VOSModel(config)


def frames(count, height=48, width=64):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def strips(height, width, ids):
    seed = np.zeros((height, width), np.int64)
    for index, object_id in enumerate(ids):
        seed[8:40, index * 4:(index + 1) * 4] = object_id
    return seed


def test_the_tracker_through_static_buffers_matches_eager_as_memory_and_banks_change():
    model = tiny_model()
    # slots_per_bank=0: each bank holds as many objects as the model has ID slots, so the
    # eleven objects added at frame 12 open exactly one more bank.
    config = TrackerConfig(size=None, mem_every=2, max_memory_frames=3, max_seed_frames=2,
                           slots_per_bank=0)
    eager = Tracker(TorchBackend(model), config)
    static_backend = TorchBackend(model)
    static_backend.graphs = GraphedModel(static_backend.model, capture=False, capture_after=2)
    static = Tracker(static_backend, config)
    clip = frames(24)
    for tracker in (eager, static):
        tracker.add_objects(clip[0], strips(48, 64, [1, 2]))
    for index, frame in enumerate(clip[1:], start=1):
        if index == 12:  # a second identity bank opens: identity and segment shapes change
            for tracker in (eager, static):
                tracker.add_objects(frame, strips(48, 64, range(3, 14)))
        if index == 18:
            for tracker in (eager, static):
                tracker.remove_object(5)
        expected = eager.step(frame, return_probabilities=True)
        got = static.step(frame, return_probabilities=True)
        assert np.array_equal(got.labels, expected.labels), f"frame {index}"
        assert np.allclose(got.probabilities, expected.probabilities, atol=1e-6)
    graphs = static_backend.graphs
    assert graphs.segment_cache.captures >= 3  # several memory sizes and two bank counts
    assert graphs.identity_cache.captures == 2  # one and two banks
    assert graphs.encode_cache.captures == 1 and graphs.encode_cache.static_calls > 15
    assert graphs.segment_cache.static_calls > 10
    assert "segment 5 captured" in graphs.summary()


def test_the_option_is_ignored_on_a_cpu():
    assert TorchBackend(tiny_model(), "cpu", cuda_graphs=True).graphs is None
