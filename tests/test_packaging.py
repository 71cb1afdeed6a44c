"""Packaging: what the Makefile installs, the extras, the license.

``make demo`` installs only the ``demo`` extra (what examples/chat needs),
``make test`` everything; both are read from ``make -n`` run as on a fresh
clone (a virtualenv path that does not exist), so nothing is installed.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Set, Tuple

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


def requirements(section: str, key: str) -> List[str]:
    """The requirement lines of a setup.cfg option (comments dropped)."""
    lines = setup_cfg()[section][key].split("\n")
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def extra(name: str) -> Set[str]:
    """The distribution names an extra of setup.cfg requires."""
    return {
        re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower()
        for line in requirements("options.extras_require", name)
    }


def installed_closure(lines: List[str]) -> Set[str]:
    """The distributions pip would install for ``lines``, as installed here."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: Set[Tuple[str, str]] = set()
    todo = [Requirement(line) for line in lines]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        for wanted in ("", *requirement.extras):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            for line in importlib.metadata.distribution(name).requires or []:
                sub = Requirement(line)
                if sub.marker is None or sub.marker.evaluate({"extra": wanted}):
                    todo.append(sub)
    return {name for name, _ in seen}


def make_dry_run(target: str, tmp_path: Path) -> List[str]:
    """The commands ``make TARGET`` would run in a fresh clone."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    # Not as a sub-make of `make test`: no inherited flags, no directory lines.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", target, f"VENV={tmp_path / 'venv'}"],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=30,
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


def link_distributions(names: Set[str], target: Path) -> None:
    """Make ``target`` a site directory holding only the installed
    distributions ``names`` (their files, linked), metadata included."""
    from packaging.utils import canonicalize_name

    for dist in importlib.metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in names:
            continue
        for top in {file.parts[0] for file in dist.files or []}:
            source = Path(str(dist.locate_file(top)))
            if top != ".." and source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)


#: Imports what the chat example imports under each of run.py's servers.
DEMO_IMPORTS = """
import sys
sys.path[:0] = [{site!r}, {root!r}, "examples/chat"]
import app                                             # Flask
import gunicorn.app.base, gunicorn.workers.ggevent     # the default server
import eventlet.hubs, eventlet.wsgi                    # --server eventlet
import werkzeug.serving                                # --server werkzeug
"""


def test_demo_extra_has_everything_the_demo_imports(tmp_path: Path) -> None:
    """What pip would install for ``.[demo]`` is enough to run the demo.

    A Python without site-packages (``-S``) gets a site directory with just
    the distributions that ``.[demo]`` pulls in, as installed here, and
    imports what the demo imports.  (gunicorn's gevent worker imports
    ``packaging``, which only gunicorn's own ``gevent`` extra brings.)
    """
    wanted = installed_closure(
        [*requirements("options", "install_requires"),
         *requirements("options.extras_require", "demo")]
    )
    link_distributions(wanted, tmp_path)
    code = DEMO_IMPORTS.format(site=str(tmp_path), root=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        cwd=str(ROOT), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_license_file() -> None:
    metadata = setup_cfg()["metadata"]
    assert metadata["license"] == "MIT"
    assert metadata["license_files"].split() == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the greenws authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
