"""RGB colours as the limited-range Y'CbCr values written into yuv420p frames.

Colours are given as 8-bit sRGB-like (R, G, B) and stored as studio-range values (Y 16..235,
Cb/Cr 16..240) with the BT.709 matrix by default (HD video, what browsers assume for WebRTC
streams of 720p and up) or BT.601 (SD).
"""

from __future__ import annotations

from typing import Literal

from ..errors import ComposeError

__all__ = ["Matrix", "rgb_to_yuv"]

Matrix = Literal["bt709", "bt601"]

_KR_KB: dict[str, tuple[float, float]] = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}


def rgb_to_yuv(rgb: tuple[int, int, int], matrix: Matrix = "bt709") -> tuple[int, int, int]:
    """Limited-range (Y, Cb, Cr) of an 8-bit RGB colour, rounded to the nearest integer."""
    if matrix not in _KR_KB:
        raise ComposeError(f"unknown colour matrix {matrix!r}; use 'bt709' or 'bt601'")
    if len(rgb) != 3 or any(not isinstance(c, int) or not 0 <= c <= 255 for c in rgb):
        raise ComposeError(f"colour must be three integers 0..255 (R, G, B), got {rgb!r}")
    kr, kb = _KR_KB[matrix]
    r, g, b = (c / 255.0 for c in rgb)
    ey = kr * r + (1.0 - kr - kb) * g + kb * b
    cb = (b - ey) / (2.0 * (1.0 - kb))
    cr = (r - ey) / (2.0 * (1.0 - kr))
    return round(16 + 219 * ey), round(128 + 224 * cb), round(128 + 224 * cr)
