import av
import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.uint8]

class TileTables:
    """Cached resampling tables of one tile geometry (built by composite_planes)."""

def fit_geometry(
    g: npt.NDArray[np.int64],
) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]: ...
def composite_planes(
    sources: list[av.VideoFrame | tuple[Plane, Plane, Plane] | None],
    geom: npt.NDArray[np.int64],
    out_planes: tuple[Plane, Plane, Plane],
    background: npt.NDArray[np.uint8],
    border_colors: npt.NDArray[np.uint8],
    fill_background: bool,
    num_threads: int,
) -> None: ...
def blend_mask(
    out_planes: tuple[Plane, Plane, Plane],
    mask: Plane,
    x: int,
    y: int,
    color: npt.NDArray[np.uint8],
    opacity: int,
) -> None: ...
