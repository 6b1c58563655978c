import av
import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.uint8]

def simd_paths() -> tuple[str, ...]:
    """The inner-loop implementations this CPU can run, the portable C loops first: ``("c",)`` or
    ``("c", "avx2")``."""

def simd_path() -> str:
    """The implementation in use: the last of simd_paths() unless set_simd chose another."""

def set_simd(path: str) -> str:
    """Use the inner loops ``path`` (one of simd_paths()) from now on; returns the previous one.

    ``set_simd("c")`` forces the portable C loops (tests run the numpy reference over every path).
    Results agree up to float rounding. Process-wide; not to be called while a composite runs.
    Raises ValueError for a path this CPU cannot run.
    """

def threaded() -> bool:
    """True when built with the worker pool (C11 atomics, POSIX threads); else calls run
    serially."""

class TileTables:
    """Cached resampling tables of one tile geometry (built by composite_planes)."""

def fit_geometry(
    g: npt.NDArray[np.int64],
) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]: ...
def composite_planes(
    sources: list[av.VideoFrame | tuple[Plane, Plane, Plane] | None],
    geom: npt.NDArray[np.int64],
    out: av.VideoFrame | tuple[Plane, Plane, Plane],
    background: npt.NDArray[np.uint8],
    border_colors: npt.NDArray[np.uint8],
    fill_background: bool,
    num_threads: int,
) -> None: ...
def blend_masks(
    out_planes: tuple[Plane, Plane, Plane],
    masks: list[Plane],
    params: npt.NDArray[np.int32],
) -> None: ...
