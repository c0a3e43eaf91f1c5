"""The stateless model: sizes of student and teacher, shapes of its three computations."""

import pytest
import torch

from defvos_core.config import ModelConfig, student_config, teacher_config
from defvos_core.config_io import load_config
from defvos_core.model.checkpoint import load_model, read_weights, save_weights
from defvos_core.model.propagation import MemoryTensors
from defvos_core.model.vos_model import VOSModel

torch.set_num_threads(2)


def run_frame(model, image, frames=2, banks=1):
    features = model.encode(image)
    mask = torch.softmax(torch.randn(banks, model.config.num_slots, image.shape[-2] // 4,
                                     image.shape[-1] // 4), dim=1)
    identity = model.encode_identity(mask)
    memory = MemoryTensors(
        features.key.unsqueeze(1).repeat(1, frames, 1, 1, 1, 1),
        features.value.unsqueeze(1).repeat(1, frames, 1, 1, 1, 1),
        identity.unsqueeze(1).repeat(1, frames, 1, 1, 1, 1),
        features.key.unsqueeze(1), features.value.unsqueeze(1), identity.unsqueeze(1))
    return features, identity, model.segment(features, memory)


def test_student_is_small_and_teacher_is_larger():
    student = VOSModel(student_config(pretrained_encoder=False))
    teacher = VOSModel(teacher_config(pretrained_encoder=False))
    print(f"student {student.parameter_count() / 1e6:.2f} M, "
          f"teacher {teacher.parameter_count() / 1e6:.2f} M parameters")
    assert student.parameter_count() <= 8_000_000
    assert teacher.parameter_count() > student.parameter_count()
    assert len(student.propagation.layers) == 1 and len(teacher.propagation.layers) == 3


@pytest.mark.parametrize("factory", [student_config, teacher_config])
def test_shapes_of_the_three_computations(factory):
    config = factory(pretrained_encoder=False)
    model = VOSModel(config).eval()
    with torch.no_grad():
        features, identity, out = run_frame(model, torch.randn(1, 3, 96, 160), frames=3,
                                            banks=2)
    layers, dim = config.num_layers, config.embed_dim
    assert features.tokens.shape == (1, dim, 6, 10)
    assert features.key.shape == (1, layers, dim, 6, 10)
    assert identity.shape == (2, layers, dim, 6, 10)
    assert out.logits.shape == (2, config.num_slots, 24, 40)
    grid = config.sample_grid[0] * config.sample_grid[1]
    assert len(out.attention_maps) == layers
    assert out.attention_maps[0].shape == (1, config.num_heads, 60, 3 * grid)


def test_sampled_keys_do_not_grow_with_image_area():
    model = VOSModel(student_config(pretrained_encoder=False)).eval()
    with torch.no_grad():
        _, _, small = run_frame(model, torch.randn(1, 3, 64, 64))
        _, _, large = run_frame(model, torch.randn(1, 3, 256, 256))
    assert small.attention_maps[0].shape[-1] == large.attention_maps[0].shape[-1]


def test_model_is_stateless():
    model = VOSModel(student_config(pretrained_encoder=False)).eval()
    image = torch.randn(1, 3, 64, 96)
    torch.manual_seed(0)
    with torch.no_grad():
        first = run_frame(model, image)[2].logits
        torch.manual_seed(0)
        second = run_frame(model, image)[2].logits
    assert torch.equal(first, second)


def test_weights_round_trip_in_fp16(tmp_path):
    model = VOSModel(student_config(pretrained_encoder=False, embed_dim=64)).eval()
    path = tmp_path / "w.pt"
    save_weights(model, path, meta={"trained": False})
    loaded = load_model(path)
    assert loaded.config.embed_dim == 64
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert a.dtype == b.dtype or a.is_floating_point(), name
        tolerance = 1e-2 * (1 + a.double().abs().max())
        assert torch.allclose(a.double(), b.double(), atol=tolerance), name
    assert read_weights(path)["meta"] == {"trained": False}


def test_corrupt_or_missing_weights_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")


def test_config_from_yaml_and_cli_overrides(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("num_layers: 2\nsample_grid: [4, 6]\n")
    config = load_config(ModelConfig, path, ["embed_dim=64", "sample_grid=5x7"])
    assert (config.num_layers, config.embed_dim, config.sample_grid) == (2, 64, (5, 7))
    with pytest.raises(ValueError, match="unknown keys"):
        load_config(ModelConfig, None, ["no_such_field=1"])


def test_batchnorm_folding_keeps_the_encoder_outputs():
    import copy

    model = VOSModel(student_config()).eval()  # ImageNet BN statistics, not identity
    fused = copy.deepcopy(model)
    fused.encoder.fuse_batchnorm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model.encode(image), fused.encode(image)):
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_decoder_input_conv_shares_the_visual_part_across_banks():
    """Split input convolution == the convolution of the concatenated channels, per bank."""
    torch.manual_seed(3)
    decoder = VOSModel(student_config(pretrained_encoder=False, embed_dim=32,
                                      decoder_dim=16)).decoder.eval()
    visual, tokens = torch.randn(1, 32, 5, 7), torch.randn(1, 32, 5, 7)
    identity = torch.randn(3, 32, 5, 7)
    with torch.no_grad():
        joined = torch.cat([visual.expand(3, -1, -1, -1), identity,
                            tokens.expand(3, -1, -1, -1)], dim=1)
        expected = decoder.input(joined)
        split = decoder.input[1:](decoder._input_conv(visual, identity, tokens))
    assert split.shape == (3, 16, 5, 7)
    assert torch.allclose(split, expected, atol=1e-5)
