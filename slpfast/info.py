"""``python -m slpfast.info``: what this machine can run.

Prints library versions, whether the extension ``slpfast._C`` is built (and with CUDA, and
whether it is stale or mismatched), and for every public op which backends can run here and,
for those that cannot, why.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys

_PACKAGES = (("torch", "torch"), ("triton", "triton"), ("numpy", "numpy"), ("numba", "numba"),
             ("nvidia.dali", "DALI"), ("xformers", "xformers"), ("pose_format", "pose-format"))


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # any import failure is a fact to report, not a crash
        return f"not available ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    version = getattr(mod, "__version__", None)
    if version is None:
        from importlib import metadata

        try:
            version = metadata.version(module.split(".")[0].replace("_", "-"))
        except metadata.PackageNotFoundError:
            version = "unknown version"
    return str(version)


def collect() -> dict:
    """Everything the report shows, as plain data (also printed with ``--json``)."""
    import logging
    import warnings

    logging.getLogger("xformers").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        versions = {"python": platform.python_version()}
        versions.update({label: _version(mod) for mod, label in _PACKAGES})
    import torch

    from . import _extension, ops
    from .ops._dispatch import REGISTRY

    versions["CUDA (torch)"] = torch.version.cuda or "none (CPU build)"
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    status = _extension.load()
    ext = {"built": status.loaded, "with_cuda": status.with_cuda, "stale": status.stale,
           "problem": status.problem, "built_against": status.build_info,
           "rebuild": _extension.rebuild_command()}
    op_errors = {}
    for name in ops.OP_MODULES:
        try:
            importlib.import_module(f"slpfast.ops.{name}")
        except Exception as exc:
            op_errors[name] = f"{type(exc).__name__}: {exc}"
    backends = {op: disp.machine_report() for op, disp in sorted(REGISTRY.items())}
    return {"versions": versions, "gpus": gpus, "extension": ext, "backends": backends, "op_import_errors": op_errors}


def render(info: dict) -> str:
    lines = ["slpfast environment", "", "versions:"]
    width = max(len(k) for k in info["versions"])
    lines += [f"  {k.ljust(width)}  {v}" for k, v in info["versions"].items()]
    lines.append(f"  {'GPUs'.ljust(width)}  {', '.join(info['gpus']) or 'none'}")
    ext = info["extension"]
    lines += ["", "extension slpfast._C:"]
    if ext["built"]:
        built = ext["built_against"]
        if built:
            lines.append(f"  built: yes, with CUDA: {'yes' if ext['with_cuda'] else 'no'} (torch {built.get('torch')}, "
                         f"CUDA {built.get('torch_cuda')}, arch {built.get('cuda_arch_list')})")
        else:
            lines.append(f"  built: yes, with CUDA: {'yes' if ext['with_cuda'] else 'no'}; its build record "
                         "(slpfast/_build_info.json) is missing, so whether it matches this torch and the sources "
                         f"in csrc/ is not known; rebuild with: {ext['rebuild']}")
        if ext["stale"]:
            lines.append(f"  STALE: csrc/ changed since the build; rebuild with: {ext['rebuild']}")
    else:
        lines.append(f"  built: no - {ext['problem']}")
    lines += ["", "backends per op (first usable one is what backend='auto' tries first):"]
    for op, report in info["backends"].items():
        lines.append(f"  {op}:")
        for backend, reasons in report.items():
            lines.append(f"    {backend:<10} " + ("yes" if not reasons else "no: " + "; ".join(reasons)))
    for mod, err in info["op_import_errors"].items():
        lines.append(f"  slpfast.ops.{mod}: could not be imported ({err})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slpfast.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=1, default=str) if args.json else render(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
