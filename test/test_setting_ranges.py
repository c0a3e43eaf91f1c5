"""One source for each setting's range: the core and the node accept the same values."""

from __future__ import annotations

import pytest

from defvos_core.config import PresenceConfig, PromptConfig, TrackerConfig
from defvos_ros.parameters import (SPECS, TRACKER_PARAMETERS, check_value, markdown_table,
                                   tracker_config_from)

RANGED = [name for name in TRACKER_PARAMETERS
          if SPECS[name].int_range or SPECS[name].float_range or SPECS[name].choices]


def node_accepts(name, value) -> bool:
    try:
        check_value(name, value)
    except ValueError:
        return False
    return True


def core_accepts(name, value) -> bool:
    try:
        tracker_config_from({name: value})
    except ValueError:
        return False
    return True


def test_every_tracker_parameter_with_limits_gets_them_from_its_config_field():
    assert {'size', 'max_long_side', 'max_memory_frames', 'presence_min_area_fraction',
            'backend', 'points_prompt_method', 'slots_per_bank'} <= set(RANGED)


@pytest.mark.parametrize('name', RANGED)
def test_the_node_and_the_core_agree_at_every_bound(name):
    spec = SPECS[name]
    if spec.choices:
        inside, outside = list(spec.choices), ['no such choice', 'rect+refine']
        if name == 'box_prompt_method':
            outside = outside[:1]
    else:
        low, high = spec.int_range or spec.float_range
        step = 1 if spec.int_range else 1e-3
        inside, outside = [low, high], [low - step, high + step]
        if name == 'size':
            inside.append(32)
            outside.append(31)  # 0 is the input size; 1..31 is no processing size
    for value in inside:
        assert node_accepts(name, value) and core_accepts(name, value), (name, value)
    for value in outside:
        assert not node_accepts(name, value) and not core_accepts(name, value), (name, value)


def test_the_core_checks_ranges_on_construction():
    with pytest.raises(ValueError, match='max_long_side is 16; expected 32 to 8192'):
        TrackerConfig(max_long_side=16)
    with pytest.raises(ValueError, match='size is 8'):
        TrackerConfig(size=8)
    with pytest.raises(ValueError, match='presence.min_area_fraction is 0.7'):
        PresenceConfig(min_area_fraction=0.7)
    with pytest.raises(ValueError, match='prompts.points_method'):
        PromptConfig(points_method='rect+refine')
    assert TrackerConfig(size=None, max_memory_frames=0).size is None


def test_the_reference_shows_the_config_ranges():
    table = markdown_table()
    assert '| `max_memory_frames` | `6` | 0..100 |' in table
    assert '| `presence_min_area_fraction` | `0.0` | 0..0.5 |' in table
