"""Checkpoints: atomic writes, keep the last k, find the latest, RNG capture and restore.

A checkpoint is one ``torch.save`` file ``<out_dir>/checkpoints/step_XXXXXXXX.pt`` holding

- ``step``: optimizer steps completed;
- ``model``, ``optimizer``, ``scheduler``: state dicts (the model without its DDP wrapper);
- ``ranks``: one entry per rank with that rank's ``loader`` state and ``rng`` states (python,
  numpy, torch CPU, CUDA), so that a resumed run continues bit-for-bit on CPU;
- ``config``: the run's configuration (a dict), ``world_size`` and ``extra`` counters.

Writes go to a temporary file in the same directory, are fsync'ed, then renamed over the final
name, so a crash at any moment leaves either the previous checkpoints or the new complete one
— never a half-written file that looks valid.
"""
from __future__ import annotations

import glob
import os
import random
import re

import numpy as np
import torch

_NAME = re.compile(r"step_(\d{8})\.pt$")


class CheckpointWriteError(RuntimeError):
    """A checkpoint (or the exported encoder) could not be written: a full disk, a folder made
    read-only, a quota. The message names the setting and the file, and says that the files
    already written are unchanged (a failed write never replaces one)."""


def os_reason(exc: BaseException) -> str | None:
    """The OSError behind ``exc`` (itself, or one it was raised from or during) as text, or None.

    torch.save reports a full disk as a RuntimeError of its zip writer ("unexpected pos"),
    raised while handling the OSError that says what happened."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return exc.strerror or str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def checkpoint_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "checkpoints")


def list_checkpoints(out_dir: str) -> list[str]:
    """Complete checkpoints in ``out_dir``, oldest first (temporary files are ignored)."""
    paths = [p for p in glob.glob(os.path.join(checkpoint_dir(out_dir), "step_*.pt")) if _NAME.search(p)]
    return sorted(paths, key=lambda p: int(_NAME.search(p).group(1)))


def latest_checkpoint(out_dir: str) -> str | None:
    paths = list_checkpoints(out_dir)
    return paths[-1] if paths else None


def resolve_resume(resume: str, out_dir: str) -> str | None:
    """``''`` -> None; ``'auto'`` -> latest in out_dir or None; a checkpoint file -> that file;
    a run's folder (or its ``checkpoints/`` folder) -> the latest checkpoint in it (must have one)."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(out_dir)
    if os.path.isdir(resume):
        run_dir = os.path.dirname(os.path.normpath(resume)) if os.path.basename(os.path.normpath(resume)) == \
            "checkpoints" else resume
        found = latest_checkpoint(run_dir)
        if found is None:
            raise ValueError(f"train.resume: folder {resume!r} holds no checkpoint (looked for "
                             f"{os.path.join(checkpoint_dir(run_dir), 'step_*.pt')})")
        return found
    if not os.path.isfile(resume):
        raise ValueError(f"train.resume: checkpoint {resume!r} does not exist")
    return resume


#: What a run leaves in its out_dir (besides an export whose name is configurable).
RUN_ARTIFACTS = ("checkpoints", "metrics.jsonl", "tensorboard")
#: What slpfast.finetune writes there after a run (its default --results paths): moved aside with
#: the run they describe, never left beside a new run's checkpoints
RESULT_FILES = ("results.json", "results_eval.json")


def _new_archive_dir(out_dir: str) -> str:
    """A new, empty ``out_dir/previous/<time>[-n]/`` folder."""
    import time

    dest = os.path.join(out_dir, "previous", time.strftime("%Y%m%d-%H%M%S"))
    n = 0
    while os.path.exists(dest + (f"-{n}" if n else "")):
        n += 1
    dest += f"-{n}" if n else ""
    os.makedirs(dest)
    return dest


def archive_previous_run(out_dir: str, extra: tuple[str, ...] = ()) -> str | None:
    """Move an earlier run's artifacts in ``out_dir`` into ``out_dir/previous/<time>/``.

    A fresh run (no ``train.resume``) in a folder that holds another run's checkpoints would
    otherwise mix its logs with the old ones, and keep-last would delete the *new* run's
    checkpoints (their step numbers are lower), after which ``resume=auto`` continues the old
    run. A run stopped before its first checkpoint still leaves its logs, which the new run's
    would be appended to. Nothing is deleted: the old run stays whole beside the new one.
    Returns the archive folder, or None when there was nothing to move. Call on one rank only.
    """
    names = [n for n in RUN_ARTIFACTS + tuple(extra) if n and os.path.exists(os.path.join(out_dir, n))]
    if not list_checkpoints(out_dir) and not any(n in RUN_ARTIFACTS for n in names):
        return None  # an export alone is a file the user may have put there: left in place
    dest = _new_archive_dir(out_dir)
    for name in names:
        os.replace(os.path.join(out_dir, name), os.path.join(dest, os.path.basename(name)))
    return dest


def set_aside_later_checkpoints(out_dir: str, step: int) -> str | None:
    """Move the checkpoints of ``out_dir`` past ``step`` into ``out_dir/previous/<time>/checkpoints``.

    A run resumed from an older checkpoint than its latest abandons the later ones: left in
    place, keep-last would delete the resumed run's own (lower-numbered) checkpoints and
    ``resume=auto`` would later pick the abandoned branch. Returns the archive folder or None.
    Call on one rank only.
    """
    later = [p for p in list_checkpoints(out_dir) if int(_NAME.search(p).group(1)) > step]
    if not later:
        return None
    dest = _new_archive_dir(out_dir)
    os.makedirs(checkpoint_dir(dest))
    for p in later:
        os.replace(p, os.path.join(checkpoint_dir(dest), os.path.basename(p)))
    return dest


def atomic_torch_save(obj, path: str) -> None:
    """torch.save to a temp file beside ``path``, fsync, then rename over ``path``.

    A write that fails for a reason of the file system (disk full, no permission) raises
    :class:`CheckpointWriteError` naming it, with the temp file removed and ``path`` (if it
    existed) unchanged."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        os.makedirs(d, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(d, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except (OSError, RuntimeError) as e:
        reason = os_reason(e)
        if reason is None:  # not the file system's doing: a bug, shown as such
            raise
        raise CheckpointWriteError(f"train.out_dir: cannot write the checkpoint {path} ({reason}); the "
                                   f"checkpoints already in {d} are unchanged") from None
    finally:
        try:
            if os.path.exists(tmp):
                os.remove(tmp)
        except OSError:  # e.g. the folder became read-only: the next save removes it (_remove_stray_temps)
            pass


def _remove_stray_temps(d: str) -> None:
    """Delete ``.step_*.pt.tmp<pid>`` files of writers that were killed mid-save (pid gone):
    each is a partial checkpoint as large as a real one."""
    for p in glob.glob(os.path.join(d, ".step_*.pt.tmp*")):
        pid = p.rsplit(".tmp", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still writing
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.remove(p)
        except OSError:
            pass


def save_checkpoint(out_dir: str, step: int, state: dict, keep_last: int) -> str:
    """Write ``state`` as the checkpoint of ``step`` and delete all but ``keep_last`` (>= 1):
    this one and the newest others (and the partial files of writers killed mid-save)."""
    path = os.path.join(checkpoint_dir(out_dir), f"step_{step:08d}.pt")
    _remove_stray_temps(checkpoint_dir(out_dir))
    atomic_torch_save({**state, "step": step}, path)
    # the file just written always stays (even beside higher-numbered ones), with the newest
    # keep_last - 1 of the others
    others = [p for p in list_checkpoints(out_dir) if p != path]
    for old in others[:max(0, len(others) - (keep_last - 1))]:
        try:
            os.remove(old)
        except FileNotFoundError:
            pass
    return path


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read a checkpoint; a damaged file gives a ValueError naming it."""
    if path.endswith(".safetensors"):
        raise ValueError(f"{path} is an exported encoder (safetensors), not a training checkpoint: resuming takes "
                         "a checkpoints/step_*.pt (to start a fine-tuning from the encoder: slpfast.finetune --init)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"checkpoint {path} cannot be read: not a complete file written by torch.save "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("step", "model", "optimizer", "scheduler", "ranks"):
        if key not in state:
            raise ValueError(f"checkpoint {path} lacks {key!r}; not a slpfast pre-training checkpoint")
    return state


def capture_rng() -> dict:
    """Every RNG this process uses."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
