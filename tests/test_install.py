"""``pip install`` builds the compiled core where a C compiler works, and installs the pure-Python core without one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "README.md", "netloop")


def install(tmp_path: Path, compiler: str | None) -> bool:
    """Install a copy of the package into a fresh target directory; whether the installed netloop is compiled."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy(source, tree / name)
    target = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "NETLOOP_PURE"}
    if compiler is not None:
        env["CC"] = compiler
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(tree)]
    subprocess.run(pip, env=env, capture_output=True, text=True, timeout=240, check=True)
    check = "import sys; sys.path.insert(0, sys.argv[1]); import netloop; print(netloop.__file__, netloop.compiled)"
    argv = [sys.executable, "-S", "-c", check, str(target)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True)
    where, compiled = done.stdout.split()
    assert Path(where).is_relative_to(target), where
    return compiled == "True"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler")
def test_pip_builds_the_compiled_core_where_a_compiler_works(tmp_path: Path) -> None:
    assert install(tmp_path, None)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_without_a_compiler_pip_installs_the_pure_python_core(tmp_path: Path) -> None:
    assert not install(tmp_path, "/bin/false")
