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


def test_rebuild_command_fits_a_checkout_or_an_installed_copy(tmp_path, monkeypatch):
    """The rebuild command was always `pip install ... -e .`: run by a user of an installed wheel
    in their own project folder it installs that project, not slpfast; from a checkout it did
    not say which folder. And an installed slpfast hashed `site-packages/csrc` (some other
    package's) as its sources, to call itself stale."""
    root = os.path.dirname(_extension._PKG_DIR)
    assert _extension.rebuild_command().startswith(f"cd {root} && pip install --no-build-isolation")
    site = tmp_path / "site-packages"
    (site / "slpfast").mkdir(parents=True)
    (site / "csrc").mkdir()
    (site / "csrc" / "other.cpp").write_text("int other;")
    monkeypatch.setattr(_extension, "_PKG_DIR", str(site / "slpfast"))
    cmd = _extension.rebuild_command()
    assert "-e ." not in cmd and "--force-reinstall" in cmd
    assert _extension._source_hash() is None


def test_unreadable_build_record_or_a_failing_import_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    """A build record cut short (interrupted build) raised JSONDecodeError from `import
    slpfast.ops.packing`; an extension whose import raised something else than ImportError (a
    registration error of a bad build) did too."""
    (tmp_path / "_build_info.json").write_text('{"torch": "2.')
    monkeypatch.setattr(_extension, "_PKG_DIR", str(tmp_path))
    assert _extension._read_build_info() == {}

    def broken(name):
        raise RuntimeError("Only a single TORCH_LIBRARY can be used to register the namespace slpfast")

    monkeypatch.setattr(_extension.importlib, "import_module", broken)
    monkeypatch.setattr(_extension, "_STATUS", None)
    try:
        status = _extension.load()
        assert not status.loaded
        assert "failed to load (RuntimeError: Only a single TORCH_LIBRARY" in status.problem
        assert "pip install" in status.problem
        assert _extension.rebuild_reason() == status.problem
    finally:
        monkeypatch.setattr(_extension, "_STATUS", None)


def test_rebuild_reason_of_a_current_cuda_less_build(monkeypatch):
    status = _extension.load()
    if not status.loaded or status.stale:
        pytest.skip("needs a current build")
    if status.with_cuda:
        pytest.skip("a CUDA build")
    monkeypatch.setenv("SLPFAST_NO_CUDA", "1")
    assert _extension.rebuild_reason() is None
    monkeypatch.delenv("SLPFAST_NO_CUDA")
    from torch.utils import cpp_extension

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", "/usr/local/cuda")
    assert "built without CUDA" in _extension.rebuild_reason()
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    assert _extension.rebuild_reason() is None
