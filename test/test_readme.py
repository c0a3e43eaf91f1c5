"""The user docs name what users can set: every node parameter and launch argument."""

from __future__ import annotations

from pathlib import Path

from defvos_ros.launch_arguments import ARGUMENTS
from defvos_ros.parameters import SPECS, markdown_table

REPO = Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text()


def test_the_parameter_reference_is_generated_from_the_declarations():
    table = markdown_table()
    assert all(f'| `{name}`' in table for name in SPECS)
    assert (REPO / 'doc' / 'parameters.md').read_text() == table, \
        'doc/parameters.md is stale: python -m defvos_ros.parameters > doc/parameters.md'
    assert '(doc/parameters.md)' in README


def test_the_readme_names_every_parameter():
    missing = [name for name in SPECS if f'`{name}`' not in README]
    assert not missing, f'parameters missing from the README: {missing}'


def test_every_launch_argument_is_in_the_readme():
    for argument in ARGUMENTS:
        assert f'`{argument.name}:=`' in README, argument.name


def test_the_readme_names_no_withdrawn_paths():
    assert '../shared' not in README
