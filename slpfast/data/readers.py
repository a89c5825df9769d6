"""Readers for the source formats. Each returns a :class:`RawClip` (all people, source layout).

- ``.pose`` (pose-format): any MediaPipe Holistic variant or OpenPose-137, by header names.
- MMPose / RTMPose JSON predictions (``.json``): a list of frames ``[{"frame_id",
  "instances": [{"keypoints": [[x, y], ...], "keypoint_scores": [...]}, ...]}, ...]`` or the
  demo's ``{"meta_info": ..., "instance_info": [...]}``; the layout comes from the number
  of keypoints (133: COCO-WholeBody).
- numpy ``.npy`` / ``.npz``: (T, P, D) or (T, people, P, D); ``.npz`` keys ``keypoints`` /
  ``pose`` / ``points`` and optional ``scores`` / ``conf`` / ``confidence`` and ``fps``. The
  channels of a bare array are read by ``channels``: "auto" (2: xy; 3: xyz, but x, y, score
  for the 133 / 137 points of the 2-D detectors COCO-WholeBody and OpenPose; 4: xyz+conf), or
  "xy", "xyz", "xyc", "xyzc" (e.g. ``xyz`` for a 3-D COCO-WholeBody model's output).
- Uni-Sign-style pickles (``.pkl``): a dict with ``keypoints`` (T, [1,] P, 2) and ``scores``
  (T, [1,] P). Loaded with a restricted unpickler that only builds numpy arrays and plain
  containers (a pickle cannot run code here).

Every failure raises :class:`ReadError` with a reason code used in the conversion report:
``corrupt`` (unreadable file), ``shape`` (unexpected shapes or unknown layout).
"""
from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import dataclass

import numpy as np

from ..layouts_sources import SourceLayout, get_layout, layout_from_components

EXTENSIONS = (".pose", ".json", ".npy", ".npz", ".pkl", ".pickle")


class ReadError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class RawClip:
    points: np.ndarray  # float32 (T, people, P, D)
    conf: np.ndarray  # float32 (T, people, P)
    fps: float | None
    layout: SourceLayout
    dims: int


def _layout_for(P: int, layout) -> SourceLayout:
    try:
        return get_layout(layout if layout not in (None, "auto") else P)
    except ValueError as e:
        raise ReadError("shape", str(e)) from None


def _as_people(a: np.ndarray, ndim_single: int) -> np.ndarray:
    if a.ndim == ndim_single:
        return a[:, None]
    if a.ndim == ndim_single + 1:
        return a
    raise ReadError("shape", f"array of shape {a.shape} is neither (T, P, ...) nor (T, people, P, ...)")


def read_pose(path: str) -> RawClip:
    try:
        from pose_format import Pose
    except ImportError as e:  # pragma: no cover
        raise ReadError("corrupt", f"pose-format is not installed: {e}") from None
    try:
        with open(path, "rb") as f:
            pose = Pose.read(f.read())
        data = pose.body.data
        conf = np.asarray(pose.body.confidence, np.float32)
        comps = [(c.name, list(c.points)) for c in pose.header.components]
        fps = _fps_of(pose.body.fps)
    except ReadError:
        raise
    except Exception as e:
        raise ReadError("corrupt", f"unreadable .pose file: {type(e).__name__}: {e}") from None
    try:
        layout = layout_from_components(comps)
    except ValueError as e:
        raise ReadError("shape", str(e)) from None
    pts = np.asarray(np.ma.getdata(data), np.float32)
    mask = np.ma.getmaskarray(data)
    if pts.ndim != 4 or conf.shape != pts.shape[:3] or pts.shape[2] != layout.num_points:
        raise ReadError("shape", f"pose data {pts.shape} / confidence {conf.shape} do not match the header")
    conf = np.where(mask.any(-1), 0.0, conf).astype(np.float32)
    return RawClip(pts, conf, fps, layout, pts.shape[-1])


def read_mmpose_json(path: str, layout=None) -> RawClip:
    try:
        with open(path) as f:
            obj = json.load(f)
    except Exception as e:
        raise ReadError("corrupt", f"unreadable JSON: {type(e).__name__}: {e}") from None
    fps = None
    if isinstance(obj, dict):
        meta = obj.get("meta_info") or {}
        fps = obj.get("fps") or meta.get("fps")
        frames = obj.get("instance_info", obj.get("frames", obj.get("predictions")))
    else:
        frames = obj
    if not isinstance(frames, list):
        raise ReadError("shape", "no list of frames in the JSON")
    try:
        per_frame = []
        for fr in frames:
            inst = fr.get("instances", []) if isinstance(fr, dict) else fr
            if isinstance(inst, dict):
                inst = [inst]
            per_frame.append([(np.asarray(i["keypoints"], np.float32),
                               np.asarray(i.get("keypoint_scores", i.get("scores")), np.float32)
                               if i.get("keypoint_scores", i.get("scores")) is not None else None) for i in inst])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ReadError("shape", f"malformed MMPose predictions: {type(e).__name__}: {e}") from None
    people = max((len(f) for f in per_frame), default=0)
    shapes = {k.shape for f in per_frame for k, _ in f}
    if len(shapes) > 1:
        raise ReadError("shape", f"keypoint arrays of different shapes {sorted(shapes)}")
    if not shapes:
        return RawClip(np.zeros((len(per_frame), 0, 0, 2), np.float32), np.zeros((len(per_frame), 0, 0), np.float32),
                       fps, _layout_for(133, layout), 2)
    (P, D), = [s if len(s) == 2 else (None, None) for s in shapes]
    if P is None or D not in (2, 3):
        raise ReadError("shape", f"keypoints must be (P, 2 or 3), got {shapes}")
    T = len(per_frame)
    pts = np.zeros((T, people, P, D), np.float32)
    conf = np.zeros((T, people, P), np.float32)
    for t, f in enumerate(per_frame):
        for p, (k, s) in enumerate(f):
            pts[t, p] = k
            if s is not None and s.shape != (P,):
                raise ReadError("shape", f"keypoint_scores {s.shape} != ({P},)")
            conf[t, p] = 1.0 if s is None else s
    return RawClip(pts, conf, _fps_of(fps), _layout_for(P, layout), D)


#: point counts of 2-D keypoint detectors (COCO-WholeBody 133, OpenPose 137): a third channel
#: of such an array is their score, not a depth
_SCORED_2D = (133, 137)


def _split_channels(a: np.ndarray, channels: str) -> tuple[np.ndarray, np.ndarray | None]:
    D = a.shape[-1]
    if channels == "auto":
        channels = {2: "xy", 3: "xyc" if a.shape[-2] in _SCORED_2D else "xyz", 4: "xyzc"}.get(D, "?")
    want = {"xy": 2, "xyz": 3, "xyc": 3, "xyzc": 4}.get(channels)
    if want is None or want != D:
        raise ReadError("shape", f"array with {D} channels cannot be read as {channels!r}")
    if channels in ("xyc", "xyzc"):
        return a[..., :-1], a[..., -1]
    return a, None


def read_numpy(path: str, layout=None, channels: str = "auto") -> RawClip:
    fps = None
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                kk = next((k for k in ("keypoints", "pose", "points", "arr_0") if k in keys), None)
                if kk is None:
                    raise ReadError("shape", f"no keypoints array in {sorted(keys)}")
                arr = np.asarray(z[kk], np.float32)
                ck = next((k for k in ("scores", "conf", "confidence") if k in keys), None)
                sc = np.asarray(z[ck], np.float32) if ck else None
                fps = _fps_of(z["fps"]) if "fps" in keys else None
        else:
            arr = np.asarray(np.load(path, allow_pickle=False), np.float32)
            sc = None
    except ReadError:
        raise
    except Exception as e:
        raise ReadError("corrupt", f"unreadable numpy file: {type(e).__name__}: {e}") from None
    if arr.ndim not in (3, 4):
        raise ReadError("shape", f"keypoints must be (T, P, D) or (T, people, P, D), got {arr.shape}")
    if sc is None:
        arr, sc = _split_channels(arr, channels)
    return _finish(arr, sc, fps, layout)


def _finish(arr, sc, fps, layout) -> RawClip:
    pts = _as_people(np.asarray(arr, np.float32), 3)
    if sc is None:
        sc = np.ones(pts.shape[:3], np.float32)
    sc = np.asarray(sc, np.float32)
    if sc.ndim == 2:
        sc = sc[:, None]
    if sc.shape != pts.shape[:3]:
        raise ReadError("shape", f"scores {sc.shape} do not match keypoints {pts.shape}")
    D = pts.shape[-1]
    if D not in (2, 3):
        raise ReadError("shape", f"keypoints must have 2 or 3 coordinates, got {D}")
    return RawClip(pts, sc, fps, _layout_for(pts.shape[2], layout), D)


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("numpy", "float32"), ("numpy", "float64"), ("numpy", "int64"),
        ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("collections", "OrderedDict"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a pickle")


def read_pickle(path: str, layout=None) -> RawClip:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(io.BytesIO(f.read())).load()
    except Exception as e:
        raise ReadError("corrupt", f"unreadable pickle: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or "keypoints" not in obj:
        raise ReadError("shape", "pickle must hold a dict with 'keypoints' (and 'scores')")
    try:
        arr = np.asarray(obj["keypoints"], np.float32)
        sc = obj.get("scores")
        sc = None if sc is None else np.asarray(sc, np.float32)
    except (TypeError, ValueError) as e:
        raise ReadError("shape", f"keypoints/scores are not arrays: {e}") from None
    if arr.ndim not in (3, 4):
        raise ReadError("shape", f"keypoints must be (T, P, D) or (T, people, P, D), got {arr.shape}")
    if sc is not None and sc.ndim == arr.ndim:  # (T, 1, P) with keypoints (T, 1, P, D)
        pass
    return _finish(arr, sc, _fps_of(obj.get("fps")), layout)


def _fps_of(value) -> float | None:
    """A file's frame rate as a float; None (unknown) unless it is one positive finite number
    (missing, 0, -5, NaN, ``"abc"``, a list: the manifest's fps or ``--default-fps`` applies).
    Every reader's rate goes through here (a non-number was an 'unexpected ValueError' that
    skipped the clip; NaN or -5 was stored)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    return float(arr[0]) if arr.size == 1 and np.isfinite(arr[0]) and arr[0] > 0 else None


def read_any(path: str, *, layout=None, channels: str = "auto") -> RawClip:
    """Read a source file by extension (see the module docstring)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".pose":
        return read_pose(path)
    if ext == ".json":
        return read_mmpose_json(path, layout)
    if ext in (".npy", ".npz"):
        return read_numpy(path, layout, channels)
    if ext in (".pkl", ".pickle"):
        return read_pickle(path, layout)
    raise ReadError("shape", f"unsupported file type {ext!r}")
