"""What the bench tools' command lines share: options, the refusal to measure a dirty
tree, and the exit on Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from bench.common import RESULTS
from bench.procs import log

DIRTY_REFUSAL = (
    "refusing to measure: tracked files differ from the last commit (git status), so "
    "no commit would name the code measured. Commit first, or pass --allow-dirty: the "
    "results then say 'dirty tree'."
)


def refused(prov: dict[str, Any], allow_dirty: bool) -> bool:
    """True, having said why, when ``prov`` is a dirty tree and that was not allowed."""
    if prov["dirty"] and not allow_dirty:
        log(DIRTY_REFUSAL)
        return True
    return False


def add_results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=RESULTS, help="results directory")


def add_allow_dirty_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="measure a tree with uncommitted changes (the results say so)",
    )


def run_main(main: Callable[[], int], interrupted: str) -> NoReturn:
    """Exit with ``main()``'s status; on Ctrl-C (or SIGTERM under ``interruptible``),
    say ``interrupted`` and exit 130."""
    try:
        status = main()
    except KeyboardInterrupt:
        log(interrupted)
        sys.exit(130)
    sys.exit(status)
