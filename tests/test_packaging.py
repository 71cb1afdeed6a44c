"""Packaging: what the Makefile installs, the extras, the license.

``make demo`` installs only the ``demo`` extra (what examples/chat needs),
``make test`` everything; both are read from ``make -n`` run as on a fresh
clone (a virtualenv path that does not exist), so nothing is installed.
"""

from __future__ import annotations

import ast
import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Set

import pytest
from servers import ROOT

pytestmark = pytest.mark.timeout(60)

CHAT = ROOT / "examples" / "chat"
#: Modules the chat example imports that another requirement brings.
PROVIDED_BY = {"werkzeug": "flask"}


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def extra(name: str) -> Set[str]:
    """The distribution names an extra of setup.cfg requires."""
    lines = setup_cfg()["options.extras_require"][name].split("\n")
    return {re.split(r"[\s\[<>=!~;]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip()}


def make_dry_run(target: str, tmp_path: Path) -> List[str]:
    """The commands ``make TARGET`` would run in a fresh clone."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def installed_extras(commands: List[str]) -> List[List[str]]:
    """The extras of each ``pip install -e '.[...]'`` among ``commands``."""
    installs = [line for line in commands if " pip install " in line]
    assert all("-e '.[" in line or "--upgrade pip" in line for line in installs), (
        installs
    )
    return [
        match.group(1).split(",")
        for line in installs
        if (match := re.search(r"-e '\.\[([^]]*)\]'", line))
    ]


def test_make_demo_installs_only_the_demo_extra(tmp_path: Path) -> None:
    commands = make_dry_run("demo", tmp_path)
    assert installed_extras(commands) == [["demo"]], commands
    assert commands[-1].endswith("/bin/python examples/chat/run.py"), commands


def test_make_test_installs_everything(tmp_path: Path) -> None:
    commands = make_dry_run("test", tmp_path)
    assert commands[0].endswith(f"-m venv {tmp_path / 'venv'}"), commands
    assert installed_extras(commands) == [["test", "lint", "bench"]], commands
    assert any(" -m pytest " in line for line in commands), commands


def _third_party_imports(directory: Path) -> Set[str]:
    local = {path.stem for path in directory.glob("*.py")} | {"greenws"}
    names = set()
    for path in directory.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names - local - set(sys.stdlib_module_names) - {"__future__"}


@pytest.mark.skipif(sys.version_info < (3, 10), reason="needs sys.stdlib_module_names")
def test_demo_extra_is_what_the_chat_example_needs() -> None:
    """Each requirement of the extra is imported by examples/chat (or is
    gunicorn's gevent worker, run.py's default), and nothing else is."""
    needed = {PROVIDED_BY.get(name, name) for name in _third_party_imports(CHAT)}
    assert "worker_class\", \"gevent\"" in (CHAT / "run.py").read_text()
    assert extra("demo") == needed | {"gevent"}
    assert extra("demo") <= extra("test")  # so `make test` can run the demo too


def test_license_file() -> None:
    metadata = setup_cfg()["metadata"]
    assert metadata["license"] == "MIT"
    assert metadata["license_files"].split() == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the greenws authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
