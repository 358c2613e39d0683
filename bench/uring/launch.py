"""Runs a module as ``python -m`` would from inside another tree, with the experiment's send mode set.

    python bench/uring/launch.py TREE SEND MODULE [ARGS...]

``python -m`` puts the working directory first on ``sys.path``, and bench's servers start in this repository, so
their ``netloop`` would be this tree's whatever ``PYTHONPATH`` says. This puts TREE first instead (and works there),
so MODULE and the ``netloop`` it imports are TREE's. SEND (``0`` or ``1``) becomes ``NETLOOP_URING_SEND``, which
only the experiment's loop reads. Run as a file, not with ``-m``, so nothing of this repository is imported first,
and the process is the server itself (bench checks the pid it started runs Python).
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    tree, send, module, *args = sys.argv[1:]
    sys.path[0] = tree  # was this file's folder
    os.chdir(tree)
    os.environ["NETLOOP_URING_SEND"] = send
    sys.argv = [module, *args]  # run_module replaces argv[0] with the module's file
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
