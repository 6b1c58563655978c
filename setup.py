"""Build the Cython kernels in src/_native/ as extension modules skymix._native.<name>.

OpenMP is used where the compiler accepts -fopenmp (prange runs rows in parallel); elsewhere the
same sources build as plain serial loops. The compositor has its own worker threads (workpool.h,
C11 atomics and POSIX threads); SKYMIX_SERIAL=1 builds it without them.
"""

import os
import subprocess
import sys
import tempfile
from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _compiler_has_openmp(compiler_cmd: list[str]) -> bool:
    """Compile and link a tiny OpenMP program; True when both succeed."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "omp.c")
        src.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            res = subprocess.run(
                [*compiler_cmd, "-fopenmp", str(src), "-o", str(Path(tmp, "omp"))],
                capture_output=True,
            )
        except OSError:
            return False
        return res.returncode == 0


class BuildExt(build_ext):
    """Adds optimisation and, when available, OpenMP flags for the compiler in use."""

    def build_extensions(self) -> None:
        compiler = self.compiler
        cmd = list(getattr(compiler, "compiler_so", None) or ["cc"])[:1]
        unix = compiler.compiler_type == "unix"
        serial = os.environ.get("SKYMIX_SERIAL") == "1"
        openmp = unix and os.environ.get("SKYMIX_NO_OPENMP") != "1" and _compiler_has_openmp(cmd)
        for ext in self.extensions:
            if unix:
                ext.extra_compile_args += ["-O3", "-fno-strict-aliasing", "-Wno-unknown-pragmas"]
            if serial:
                ext.define_macros.append(("SKYMIX_SERIAL", "1"))
            if openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        print(  # noqa: T201 - the build says which native core it made
            f"skymix: building native core {'with' if openmp else 'without'} OpenMP",
            file=sys.stderr,
        )
        super().build_extensions()


# the C headers next to the kernels: rebuild when they change, and ship them in the sdist
extensions = [
    Extension(f"skymix._native.{Path(pyx).stem}", [pyx], depends=sorted(glob("src/_native/*.h")))
    for pyx in sorted(glob("src/_native/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
    cmdclass={"build_ext": BuildExt},
)
