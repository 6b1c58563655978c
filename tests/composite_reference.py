"""A plain numpy (float64) reference of the compositor, written from its specification.

Separable resampling: a destination sample r source samples wide takes the area average of the
source samples it covers when r > 1, the bilinear interpolation of its neighbours when r <= 1;
taps outside the source are dropped and the rest renormalised. Sample positions in luma units:
luma i at i + 0.5; chroma j at 2j + 0.5 across and 2j + 1 down. A plane sample belongs to a
rectangle when its position lies in the rectangle's half-open span.
"""

from __future__ import annotations

import numpy as np

from skymix.compose.color import rgb_to_yuv

# per plane: (factor, horizontal offset, vertical offset)
SITING = [(1, 0.5, 0.5), (2, 0.5, 1.0), (2, 0.5, 1.0)]


def fit(rect, src_w, src_h, fit_mode, border):
    """(content x, y, w, h) in the frame and the source crop (x, y, w, h) it shows."""
    x, y, w, h = rect
    ix, iy, iw, ih = x + border, y + border, w - 2 * border, h - 2 * border
    if fit_mode == "cover":
        s = max(iw / src_w, ih / src_h)
        cw, ch = iw / s, ih / s
        return (ix, iy, iw, ih), ((src_w - cw) / 2, (src_h - ch) / 2, cw, ch)
    s = min(iw / src_w, ih / src_h)
    cw = min(max(int(np.floor(src_w * s + 0.5)), 1), iw)
    ch = min(max(int(np.floor(src_h * s + 0.5)), 1), ih)
    return (ix + (iw - cw) // 2, iy + (ih - ch) // 2, cw, ch), (
        0.0,
        0.0,
        float(src_w),
        float(src_h),
    )


def owned(n, factor, offset, start, length):
    """Boolean mask of the n plane samples whose position lies in [start, start + length)."""
    pos = factor * np.arange(n) + offset
    return (pos >= start) & (pos < start + length)


def weights(idx, factor, offset, d0, dn, s0, sn, n_src):
    """(len(idx), n_src) resampling matrix for destination samples idx of one axis."""
    r = sn / dn
    c = ((factor * idx + offset - d0) * r + s0 - offset) / factor
    k = np.arange(n_src)[None, :]
    c = c[:, None]
    if r > 1:
        lo, hi = c - r / 2, c + r / 2
        w = np.clip(np.minimum(hi, k + 0.5) - np.maximum(lo, k - 0.5), 0, None)
    else:
        w = np.clip(1 - np.abs(k - c), 0, None)
    total = w.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 1e-12
    if empty.any():
        nearest = np.clip(np.floor(c[empty, 0] + 0.5), 0, n_src - 1).astype(int)
        w[empty] = 0
        w[empty, nearest] = 1
        total = w.sum(axis=1, keepdims=True)
    return w / total


def composite_reference(tiles, size, *, background=(0, 0, 0), border=0, border_color=(0, 0, 0)):
    """Float64 planes of the composite. tiles: (planes | None, (x, y, w, h), fit, color | None)."""
    W, H = size
    bg = rgb_to_yuv(background)
    default_bc = rgb_to_yuv(border_color)
    dims = [(H, W), ((H + 1) // 2, (W + 1) // 2), ((H + 1) // 2, (W + 1) // 2)]
    out = [np.full(d, float(bg[p])) for p, d in enumerate(dims)]
    content_mask = [np.zeros(d, bool) for d in dims]
    for src, rect, fit_mode, color in tiles:
        bc = default_bc if color is None else rgb_to_yuv(color)
        x, y, w, h = rect
        inner = (x + border, y + border, w - 2 * border, h - 2 * border)
        has = src is not None and inner[2] > 0 and inner[3] > 0
        if has:
            (cx, cy, cw, ch), (sx, sy, sw, sh) = fit(
                rect, src[0].shape[1], src[0].shape[0], fit_mode, border
            )
        for p, (ph, pw) in enumerate(dims):
            f, ho, vo = SITING[p]
            rows = owned(ph, f, vo, y, h)
            cols = owned(pw, f, ho, x, w)
            region = rows[:, None] & cols[None, :]
            out[p][region] = bc[p]
            irows = owned(ph, f, vo, inner[1], inner[3]) & rows
            icols = owned(pw, f, ho, inner[0], inner[2]) & cols
            out[p][irows[:, None] & icols[None, :]] = bg[p]
            content_mask[p][region] = False
            if not has:
                continue
            crows = np.nonzero(owned(ph, f, vo, cy, ch) & irows)[0]
            ccols = np.nonzero(owned(pw, f, ho, cx, cw) & icols)[0]
            if not len(crows) or not len(ccols):
                continue
            plane = src[p].astype(np.float64)
            wv = weights(crows, f, vo, cy, ch, sy, sh, plane.shape[0])
            wh = weights(ccols, f, ho, cx, cw, sx, sw, plane.shape[1])
            out[p][np.ix_(crows, ccols)] = wv @ plane @ wh.T
            content_mask[p][np.ix_(crows, ccols)] = True
    return out, content_mask


def blend_reference(planes, mask, x, y, color, opacity=255):
    """Integer reference of the mask blend (see skymix._native.composite.blend_masks)."""
    yy, uu, vv = (p.astype(np.int64).copy() for p in planes)
    cy, cu, cv = color
    H, W = yy.shape
    full = np.zeros(
        (H + 1 + 2 * abs(y) + mask.shape[0], W + 1 + 2 * abs(x) + mask.shape[1]), np.int64
    )
    # mask painted onto a canvas that covers the frame (and one extra row/column for chroma)
    oy, ox = abs(y), abs(x)
    full[oy + y : oy + y + mask.shape[0], ox + x : ox + x + mask.shape[1]] = mask
    m = full[oy : oy + H + 1, ox : ox + W + 1]
    a = (m[:H, :W] * opacity + 127) // 255
    yy = (yy * (255 - a) + cy * a + 127) // 255
    ch, cw = uu.shape
    quad = m[: 2 * ch, : 2 * cw].reshape(ch, 2, cw, 2).sum(axis=(1, 3))
    ac = (((quad + 2) // 4) * opacity + 127) // 255
    uu = (uu * (255 - ac) + cu * ac + 127) // 255
    vv = (vv * (255 - ac) + cv * ac + 127) // 255
    return yy.astype(np.uint8), uu.astype(np.uint8), vv.astype(np.uint8)
