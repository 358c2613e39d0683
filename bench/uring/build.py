"""Build the io_uring experiment: a scratch copy of the tree whose ``netloop._speedups`` is bench/uring/uring_serve.c.

    python -m bench.uring.build DEST

copies the repository's files (tracked and new, not ignored) to DEST and compiles the experiment there as
``netloop._speedups``; run anything with ``PYTHONPATH=DEST`` (tests, ``python -m bench``, the examples) and its
compiled loop is the io_uring one. ``NETLOOP_URING_SEND=1`` also submits writes as send SQEs (see the C file).
The package itself never builds or imports this.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def copy_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def build(dest: Path) -> Path:
    # setuptools only here: reading a tree (``built``) needs none, and Python 3.12+ does not ship it
    from setuptools import Distribution, Extension  # type: ignore[import-untyped]
    from setuptools.command.build_ext import build_ext  # type: ignore[import-untyped]

    extension = Extension("netloop._speedups", [str(ROOT / "bench" / "uring" / "uring_serve.c")])
    command = build_ext(Distribution({"ext_modules": [extension]}))
    command.build_lib = str(dest)
    command.build_temp = str(dest / "build" / "uring")
    command.ensure_finalized()
    command.run()
    return dest / str(command.get_ext_filename("netloop._speedups"))


def built(tree: Path) -> bool:
    """Whether ``tree`` holds a ``netloop._speedups`` this Python can import (the experiment's or the shipped one)."""
    return any((tree / "netloop" / f"_speedups{suffix}").exists() for suffix in EXTENSION_SUFFIXES)


def make(dest: Path) -> Path:
    """Copies the tree to ``dest`` and builds the experiment there; returns the built module's path."""
    copy_tree(dest)
    for stale in (dest / "netloop").glob("_speedups*.so"):
        stale.unlink()
    return build(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="the scratch tree to make (created; files there are replaced)")
    args = parser.parse_args()
    built = make(args.dest.resolve())
    print(f"built {built}", file=sys.stderr)


if __name__ == "__main__":
    main()
