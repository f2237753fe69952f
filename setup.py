"""Build script: its only job is to declare the Cython extension ``pyroact._fastwire``.

Set ``PYROACT_PUREPYTHON=1`` to install without it (the pure-Python engine is then used).
A failed compile fails the install: a silent fallback would ship a slow build unnoticed.
"""

import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

OPT_OUT_HINT = (
    "cannot build pyroact._fastwire (is a C compiler and the Python headers installed?); "
    "set PYROACT_PUREPYTHON=1 to install the pure-Python engine instead"
)


class LoudBuildExt(build_ext):
    """Turn any compile failure into one clear error that names the opt-out."""

    def run(self):
        try:
            super().run()
        except Exception as exc:
            sys.stderr.write(f"\nerror: {OPT_OUT_HINT}\n  cause: {exc!r}\n\n")
            raise SystemExit(f"error: {OPT_OUT_HINT}") from exc

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            sys.stderr.write(f"\nerror: {OPT_OUT_HINT}\n  cause: {exc!r}\n\n")
            raise SystemExit(f"error: {OPT_OUT_HINT}") from exc


def extensions():
    if os.environ.get("PYROACT_PUREPYTHON") or platform.python_implementation() != "CPython":
        return []
    from Cython.Build import cythonize  # from [build-system]; pure builds do not need Cython

    macros = [("PYROACT_DEBUG", "1")] if os.environ.get("PYROACT_DEBUG") else []
    # No embedsignature: binding=True already gives inspect.signature, and embedded signature
    # lines would make the docstrings differ from the pure engine's.
    directives = {"language_level": "3"}
    if os.environ.get("PYROACT_CYTHON_TRACE"):
        directives["linetrace"] = True
        macros.append(("CYTHON_TRACE", "1"))
    from setuptools import Extension

    ext = Extension("pyroact._fastwire", ["pyroact/_fastwire.pyx"], define_macros=macros)
    return cythonize(
        [ext],
        compiler_directives=directives,
        annotate=bool(os.environ.get("PYROACT_CYTHON_ANNOTATE")),
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": LoudBuildExt})
