"""Typed stub of skymix._native.mix (src/_native/mix.pyx); call it through skymix.compose.audio."""

import numpy as np
import numpy.typing as npt

def mix_into(
    sources: list[npt.NDArray[np.float32] | npt.NDArray[np.int16]],
    offsets: list[int],
    gains: list[float],
    out: npt.NDArray[np.float32] | npt.NDArray[np.int16],
    limiter: bool,
    threshold: float,
    num_threads: int,
) -> int: ...
