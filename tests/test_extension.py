"""The extension's build record and the diagnosis of missing / mismatched builds."""
import json
import os
import subprocess
import sys

import pytest
import torch

from slpfast import _extension
from slpfast.ops._dispatch import Backend, Dispatcher


def test_build_info_matches_running_torch():
    status = _extension.load()
    assert status.loaded, status.problem
    assert status.build_info["torch"] == torch.__version__
    assert status.with_cuda == (torch.version.cuda is not None and status.build_info["with_cuda"])
    assert not status.stale, "csrc/ changed since the last build: rebuild the extension"


def test_mismatched_build_is_reported_with_rebuild_command(tmp_path, monkeypatch):
    info = dict(_extension._read_build_info(), torch="0.0.1")
    monkeypatch.setattr(_extension, "_read_build_info", lambda: info)
    monkeypatch.setattr(_extension, "_STATUS", None)
    status = _extension.load()
    assert not status.loaded
    assert "built for torch 0.0.1" in status.problem and "pip install" in status.problem
    with pytest.raises(RuntimeError, match="pack_padded: slpfast._C was built for torch 0.0.1"):
        _extension.require("pack_padded")
    monkeypatch.setattr(_extension, "_STATUS", None)


def test_dispatcher_rules():
    d = Dispatcher("toy_op", [
        Backend("fast", lambda x: "fast", supports=lambda x: [] if x > 0 else ["fast: x must be positive"]),
        Backend("never", lambda x: "never", available=lambda: ["never: not installed"]),
    ])
    assert d.select("auto", x=1).name == "fast"
    with pytest.raises(NotImplementedError) as err:
        d.select("auto", x=-1)
    assert "fast: x must be positive" in str(err.value) and "never: not installed" in str(err.value)
    with pytest.raises(ValueError, match="backend 'never' cannot run"):
        d.select("never", x=1)
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        d.select("other", x=1)


def test_info_prints_versions_extension_and_backends():
    out = subprocess.run([sys.executable, "-m", "slpfast.info", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["versions"]["torch"] == torch.__version__
    assert info["extension"]["built"] is True
    assert info["backends"]["pack_padded"]["extension"] == []
    text = subprocess.run([sys.executable, "-m", "slpfast.info"], capture_output=True, text=True, check=True).stdout
    assert "backends per op" in text and "pack_padded" in text


def test_missing_build_record_is_said_and_cuda_is_asked_of_the_dispatcher(monkeypatch):
    """A .so without slpfast/_build_info.json (copied, or built by other means) was reported as
    'with CUDA: no (torch None, ...)' and a CUDA build would have refused CUDA tensors."""
    from slpfast import info

    monkeypatch.setattr(_extension, "_read_build_info", lambda: {})
    monkeypatch.setattr(_extension, "_STATUS", None)
    try:
        status = _extension.load()
        assert status.loaded and status.build_info == {}
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("slpfast::augment_pose", "CUDA")
        assert status.with_cuda == has_cuda
        text = info.render(info.collect())
        assert "build record (slpfast/_build_info.json) is missing" in text and "torch None" not in text
    finally:
        monkeypatch.setattr(_extension, "_STATUS", None)


def test_every_python_folder_is_a_package_the_wheel_ships():
    """setup.py ships find_packages(): a folder of modules without __init__.py imports from a
    source checkout (a namespace package) but is left out of the wheel, so `pip install .`
    gave an slpfast without slpfast.train (and no `python -m slpfast.pretrain`)."""
    import setuptools

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shipped = set(setuptools.find_packages(where=root, include=["slpfast", "slpfast.*"]))
    folders = {os.path.relpath(d, root).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(root, "slpfast"))
               if "__pycache__" not in d and any(f.endswith(".py") for f in files)}
    assert folders - shipped == set()
