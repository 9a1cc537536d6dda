"""Only for the optional mypyc build; everything else is in pyproject.toml.

Without ``EDGERQ_MYPYC=1`` this adds nothing: the package is pure Python and
needs no compiler. With it, the modules listed in ``src/edgerq/compiled.py``
are compiled by mypyc (mypy and a C compiler must be installed, so build with
``pip install --no-build-isolation``; ``make build-fast`` does).
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).resolve().parent


def ext_modules() -> list[Any]:
    if os.environ.get("EDGERQ_MYPYC", "0") != "1":
        return []
    from mypyc.build import mypycify

    names = runpy.run_path(str(HERE / "src" / "edgerq" / "compiled.py"))["MYPYC_MODULES"]
    paths = [str(Path("src", *name.split("."))) + ".py" for name in names]
    return list(mypycify(paths, opt_level="3"))


setup(ext_modules=ext_modules())
