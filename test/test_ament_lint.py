"""ament linters over the package: flake8 and pep257, plus copyright and xmllint when installed.

flake8 and pep257 run once each through the ament_flake8 / ament_pep257 Python APIs over
defvos_core, defvos_ros, launch and test; the results are reported as one test per file,
so a failure names the file at fault.

Configuration, independent of setup.cfg:
- flake8: ament_flake8's own configuration file, with the maximum line length set to 100
  explicitly (the project's limit; ament's default is 99).
- pep257: ament's convention (its ignore list) plus D213. This project writes the summary of
  a multi-line docstring on the opening line, as PEP 257's own examples do; D212 and D213
  are two mutually exclusive choices, ament ignores D212 (so enforces D213), pydocstyle's
  pep257 convention ignores both. Everything else of the ament convention is checked.
- ament_copyright and ament_xmllint have no wheels on the package registry: the copyright
  test is skipped unless ament_copyright is importable; package.xml is checked with the
  xmllint program when it is on PATH (Debian: libxml2-utils), for well-formedness only,
  since the package_format3 schema is fetched from download.ros.org and tests run offline.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINTED = ('defvos_core', 'defvos_ros', 'launch', 'test')
MAX_LINE_LENGTH = 100
FILES = sorted(str(path.relative_to(REPO)) for folder in LINTED
               for path in (REPO / folder).rglob('*.py') if '__pycache__' not in path.parts)


def _relative(path: str) -> str:
    return os.path.relpath(os.path.abspath(path), REPO)


# ament_flake8's API, run in a child process: flake8 forks worker processes, and forking
# this pytest process while other tests' threads (rclpy executors, DDS) are alive can
# deadlock the children. The child prints the error list as JSON after a marker line.
_FLAKE8_CHILD = """
import json, sys
from ament_flake8.main import main_with_errors
_, errors = main_with_errors(sys.argv[1:])
print('@@errors@@' + json.dumps(errors))
"""


@pytest.fixture(scope='module')
def flake8_errors(tmp_path_factory):
    """Return {file: [error lines]} of one ament_flake8 run over the linted folders."""
    pytest.importorskip('ament_flake8', reason='ament_flake8 is not installed')
    # run in an empty folder: ament_flake8 walks the working directory for AMENT_IGNORE
    run = subprocess.run([sys.executable, '-c', _FLAKE8_CHILD, '--linelength',
                          str(MAX_LINE_LENGTH)] + [str(REPO / folder) for folder in LINTED],
                         cwd=tmp_path_factory.mktemp('flake8'), capture_output=True, text=True,
                         timeout=600)
    marker = run.stdout.rfind('@@errors@@')
    assert marker >= 0, f'ament_flake8 did not finish:\n{run.stdout[-2000:]}{run.stderr}'
    by_file = defaultdict(list)
    for error in json.loads(run.stdout[marker + len('@@errors@@'):]):
        by_file[_relative(error.split(':', 1)[0])].append(error)
    return by_file


@pytest.fixture(scope='module')
def pep257_errors():
    """Return {file: [error lines]} of one ament_pep257 run over the linted folders."""
    pytest.importorskip('pydocstyle', reason='ament_pep257 needs pydocstyle (pip install '
                                             'pydocstyle)')
    from ament_pep257.main import _ament_ignore, generate_pep257_report

    ignore = ','.join(list(_ament_ignore) + ['D213'])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        report = generate_pep257_report([str(REPO / folder) for folder in LINTED], [], ignore,
                                        '', 'pep257', '', '')
    return {_relative(filename): [f"{_relative(filename)}:{e['linenumber']}: {e['message']}"
                                  for e in errors]
            for filename, errors in report if errors}


@pytest.mark.parametrize('path', FILES)
def test_flake8(path, flake8_errors):
    assert not flake8_errors.get(path), '\n'.join(flake8_errors[path])


@pytest.mark.parametrize('path', FILES)
def test_pep257(path, pep257_errors):
    assert not pep257_errors.get(path), '\n'.join(pep257_errors[path])


def test_copyright():
    main = pytest.importorskip('ament_copyright.main', reason='ament_copyright is not '
                               'installable from the package registry').main
    assert main([str(REPO / folder) for folder in LINTED]) == 0


def test_xmllint_package_xml():
    xmllint = shutil.which('xmllint')
    if xmllint is None:
        pytest.skip('xmllint not found (Debian: apt-get install libxml2-utils); '
                    'ament_xmllint is not installable from the package registry')
    run = subprocess.run([xmllint, '--noout', '--nonet', str(REPO / 'package.xml')],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
