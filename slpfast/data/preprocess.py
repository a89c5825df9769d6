"""Conversion-time preprocessing (numba): main-signer selection, gap filling, fps resampling.

All functions take float32 ``points`` (T, [people,] J, C) and ``conf`` (T, [people,] J); a
joint is missing where its confidence is 0 (or below). ``conf`` must be finite, and so must
``points`` wherever ``conf > 0`` (values at missing joints are never read); anything else, or
mismatched shapes, raises ``ValueError`` naming the argument.

- :func:`select_signer`: (T, people, J, C) -> (T, J, C): per frame the person with the
  highest score (``weight``-weighted sum of its joints' confidences — the converter weighs
  body + hands — times the square root of the area of its joints' bounding box), with
  hysteresis: the previous frame's choice is kept unless another person
  scores ``switch_margin`` times higher (people are not tracked across frames by the pose
  estimators, so the choice is re-matched each frame by distance to the previous centroid).
- :func:`fill_gaps`: per joint, runs of at most ``max_gap`` missing frames with valid frames
  on both sides are linearly interpolated (confidence interpolated too). Longer gaps stay.
- :func:`resample`: linear interpolation in time to ``target_fps`` (a frame between a valid
  and a missing one is missing).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _fill_gaps(points, conf, max_gap):
    T, J, C = points.shape
    for j in range(J):
        t = 0
        while t < T:
            if conf[t, j] > 0:
                t += 1
                continue
            s = t
            while t < T and not conf[t, j] > 0:  # (a NaN confidence can never stall this loop)
                t += 1
            e = t  # missing run [s, e)
            if s > 0 and e < T and e - s <= max_gap:
                a, b = s - 1, e
                for k in range(s, e):
                    w = (k - a) / (b - a)
                    for c in range(C):
                        points[k, j, c] = (1 - w) * points[a, j, c] + w * points[b, j, c]
                    conf[k, j] = (1 - w) * conf[a, j] + w * conf[b, j]
    return points, conf


def _check_inputs(fn: str, points, conf, people: bool) -> tuple[np.ndarray, np.ndarray]:
    """float32 contiguous ``points`` (T, [people,] J, C) and ``conf`` (T, [people,] J), checked:
    matching shapes (the numba kernels do no bounds checks), finite confidences, finite points
    wherever the confidence is > 0."""
    points = np.ascontiguousarray(points, np.float32)
    conf = np.ascontiguousarray(conf, np.float32)
    nd = 4 if people else 3
    want = "(T, people, J, C)" if people else "(T, J, C)"
    if points.ndim != nd:
        raise ValueError(f"{fn}: points must be {want}, got shape {points.shape}")
    if conf.shape != points.shape[:-1]:
        raise ValueError(f"{fn}: conf must be {want[:-4]}) = {points.shape[:-1]} to match points, got {conf.shape}")
    if not np.isfinite(conf).all():
        raise ValueError(f"{fn}: conf contains NaN or inf ({int((~np.isfinite(conf)).sum())} values); "
                         f"use 0 for missing joints")
    if not np.isfinite(points[conf > 0]).all():
        raise ValueError(f"{fn}: points contain NaN or inf at joints with conf > 0")
    return points, conf


def fill_gaps(points: np.ndarray, conf: np.ndarray, max_gap: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate missing runs of at most ``max_gap`` frames (copies; inputs untouched).

    points (T, J, C), conf (T, J) -> the same shapes, float32. ``max_gap`` is an int >= 0
    (0 disables filling).
    """
    if isinstance(max_gap, (bool, np.bool_)) or not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise ValueError(f"fill_gaps: max_gap must be an integer >= 0 (0 disables gap filling), got {max_gap!r}")
    points, conf = _check_inputs("fill_gaps", points, conf, people=False)
    p = points.copy()
    c = conf.copy()
    if max_gap <= 0 or p.shape[0] < 3:
        return p, c
    return _fill_gaps(p, c, int(max_gap))


@njit(cache=True)
def _select(points, conf, weight, switch_margin):
    T, P, J, C = points.shape
    out = np.zeros((T, J, C), np.float32)
    oc = np.zeros((T, J), np.float32)
    choice = np.full(T, -1, np.int64)
    prev = -1
    pcx = 0.0
    pcy = 0.0
    for t in range(T):
        best = -1
        best_s = 0.0
        scores = np.zeros(P)
        cxs = np.zeros(P)
        cys = np.zeros(P)
        for p in range(P):
            s = 0.0
            n = 0.0
            x0, x1, y0, y1 = 1e30, -1e30, 1e30, -1e30
            sx = 0.0
            sy = 0.0
            for j in range(J):
                c = conf[t, p, j]
                if c > 0:
                    s += c * weight[j]
                    x = points[t, p, j, 0]
                    y = points[t, p, j, 1]
                    x0 = min(x0, x)
                    x1 = max(x1, x)
                    y0 = min(y0, y)
                    y1 = max(y1, y)
                    sx += x
                    sy += y
                    n += 1
            if n > 0:
                size = np.sqrt(max((x1 - x0) * (y1 - y0), 0.0)) + 1e-6
                scores[p] = s * size
                cxs[p] = sx / n
                cys[p] = sy / n
        if prev >= 0:  # re-match the previous signer by centroid distance
            dmin = 1e30
            for p in range(P):
                if scores[p] > 0:
                    d = (cxs[p] - pcx) ** 2 + (cys[p] - pcy) ** 2
                    if d < dmin:
                        dmin = d
                        prev = p
        for p in range(P):
            if scores[p] > best_s:
                best_s = scores[p]
                best = p
        if prev >= 0 and best >= 0 and scores[prev] > 0 and best_s < switch_margin * scores[prev]:
            best = prev
        choice[t] = best
        if best >= 0:
            prev = best
            pcx = cxs[best]
            pcy = cys[best]
            for j in range(J):
                oc[t, j] = conf[t, best, j]
                for c in range(C):
                    out[t, j, c] = points[t, best, j, c]
    return out, oc, choice


def select_signer(points: np.ndarray, conf: np.ndarray, *, weight: np.ndarray | None = None,
                  switch_margin: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, people, J, C), (T, people, J) -> the main signer's points (T, J, C) and conf (T, J),
    and the person index per frame (T,) int64 (-1 where nobody has a confident joint).

    ``weight`` (J,) weighs each joint's confidence in the score (default: all 1);
    ``switch_margin`` (finite, >= 1) is how many times higher another person must score to
    replace the previous frame's signer.
    """
    points, conf = _check_inputs("select_signer", points, conf, people=True)
    J = points.shape[2]
    w = np.ones(J) if weight is None else np.asarray(weight, np.float64)
    if w.shape != (J,) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"select_signer: weight must be {J} finite values >= 0 (one per joint), got shape {w.shape}")
    sm = float(switch_margin)
    if not (np.isfinite(sm) and sm >= 1.0):
        raise ValueError(f"select_signer: switch_margin must be a finite number >= 1, got {switch_margin!r}")
    return _select(points, conf, np.ascontiguousarray(w), sm)


@njit(cache=True)
def _resample(points, conf, src_fps, dst_fps, T2):
    T, J, C = points.shape
    out = np.zeros((T2, J, C), np.float32)
    oc = np.zeros((T2, J), np.float32)
    for k in range(T2):
        x = k * src_fps / dst_fps
        a = int(np.floor(x))
        if a >= T - 1:
            a = T - 1
            w = 0.0
        else:
            w = x - a
        b = min(a + 1, T - 1)
        for j in range(J):
            ca = conf[a, j]
            cb = conf[b, j]
            if w < 1e-6:
                if ca > 0:
                    oc[k, j] = ca
                    for c in range(C):
                        out[k, j, c] = points[a, j, c]
            elif ca > 0 and cb > 0:
                oc[k, j] = (1 - w) * ca + w * cb
                for c in range(C):
                    out[k, j, c] = (1 - w) * points[a, j, c] + w * points[b, j, c]
    return out, oc


def resample(points: np.ndarray, conf: np.ndarray, src_fps: float, dst_fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample points (T, J, C) and conf (T, J) from ``src_fps`` to ``dst_fps`` (both positive
    and finite) by linear interpolation -> (T2, J, C), (T2, J) float32 with
    ``T2 = round((T - 1) * dst_fps / src_fps) + 1`` (0 when T is 0)."""
    for arg, v in (("src_fps", src_fps), ("dst_fps", dst_fps)):
        try:
            ok = float(v) > 0 and np.isfinite(float(v))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"resample: {arg} must be a positive finite frame rate, got {v!r}")
    points, conf = _check_inputs("resample", points, conf, people=False)
    T = points.shape[0]
    if T == 0 or abs(src_fps - dst_fps) < 1e-6:
        return points.copy(), conf.copy()
    T2 = max(1, int(round((T - 1) * dst_fps / src_fps)) + 1)
    return _resample(points, conf, float(src_fps), float(dst_fps), T2)
