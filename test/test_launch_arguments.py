"""The launch file's logic, without the launch stack: arguments, parameter mapping, lookup."""

import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml

from defvos_ros import launch_arguments
from defvos_ros.launch_arguments import (ARGUMENTS, default_params_file, node_action_options,
                                         node_parameter_overrides, segmenter_action_options)
from defvos_ros.parameters import parameter_defaults

REPO = Path(__file__).resolve().parents[1]


def _defaults() -> dict:
    return {argument.name: argument.default for argument in ARGUMENTS}


def test_defaults_leave_the_params_file_in_charge():
    assert node_parameter_overrides(_defaults()) == {'use_sim_time': False, 'autostart': True}


def test_non_empty_arguments_override_parameters_that_exist():
    values = dict(_defaults(), weights='w.pt', backend='onnxruntime', device='cuda:0',
                  use_sim_time='True', autostart='false')
    overrides = node_parameter_overrides(values)
    assert overrides == {'use_sim_time': True, 'autostart': False, 'weights': 'w.pt',
                         'backend': 'onnxruntime', 'device': 'cuda:0'}
    assert set(overrides) - {'use_sim_time'} <= set(parameter_defaults())


@pytest.mark.parametrize('name, value, text', [
    ('backend', 'tensorrt', "'backend' is 'tensorrt'"),
    ('use_sim_time', 'maybe', "'use_sim_time' is 'maybe'"),
    ('autostart', 'later', "'autostart' is 'later'"),
])
def test_bad_arguments_are_refused_naming_them(name, value, text):
    with pytest.raises(ValueError, match=text):
        node_parameter_overrides(dict(_defaults(), **{name: value}))


def test_node_action_maps_topics_namespace_and_params_file():
    values = dict(_defaults(), image_topic='/camera/image_raw', seed_topic='operator/seed',
                  namespace='/robot1/')
    options = node_action_options(values)
    assert options['name'] == 'defvos' and options['namespace'] == 'robot1'
    assert options['remappings'] == [('image', '/camera/image_raw'),
                                     ('seed_mask', 'operator/seed')]
    params_file, overrides = options['parameters']
    assert Path(params_file) == default_params_file()
    assert yaml.safe_load(Path(params_file).read_text())['/**']['ros__parameters']
    assert overrides == {'use_sim_time': False, 'autostart': True}
    with pytest.raises(ValueError, match="'params_file'"):
        node_action_options(dict(_defaults(), params_file='/no/such/file.yaml'))


def test_source_tree_and_editable_install():
    with mock.patch.dict(os.environ, {'AMENT_PREFIX_PATH': sys.prefix}):
        assert default_params_file() == REPO / 'config' / 'defvos.yaml'
        assert segmenter_action_options() == {'executable': sys.executable,
                                              'arguments': ['-m', 'defvos_ros']}


def test_installed_package_is_found_through_the_ament_index():
    with tempfile.TemporaryDirectory() as prefix:
        root = Path(prefix)
        index = root / 'share' / 'ament_index' / 'resource_index' / 'packages'
        index.mkdir(parents=True)
        (index / launch_arguments.PACKAGE).touch()
        config = root / 'share' / 'defvos_ros' / 'config' / 'defvos.yaml'
        config.parent.mkdir(parents=True)
        config.write_text('/**:\n  ros__parameters: {}\n')
        executable = root / 'lib' / 'defvos_ros' / 'segmenter'
        executable.parent.mkdir(parents=True)
        executable.write_text('#!/usr/bin/env python3\n')
        executable.chmod(0o755)
        with mock.patch.dict(os.environ, {'AMENT_PREFIX_PATH': prefix}):
            assert default_params_file() == config
            assert segmenter_action_options() == {'package': 'defvos_ros',
                                                  'executable': 'segmenter'}


def test_launch_file_declares_every_argument_of_the_module():
    text = (REPO / 'launch' / 'segment.launch.py').read_text()
    assert 'ARGUMENTS' in text and 'node_action_options' in text
    for argument in ARGUMENTS:
        assert argument.description
