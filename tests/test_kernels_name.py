"""The checkout's ``kernels/`` folder (the package ``slpfast.kernels``) never takes the top-level
name ``kernels`` from the installed PyPI package of that name (Hugging Face's, which
transformers imports), even when the checkout's root is first on ``sys.path`` (``python -m``
run from it)."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, *args: str, env_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if env_path is not None:
        env["PYTHONPATH"] = env_path
    return subprocess.run([sys.executable, *args, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_installed_kernels_package_wins_over_the_checkout_folder(tmp_path):
    # an installed `kernels` package, behind the checkout's root on sys.path (cwd comes first)
    site = tmp_path / "site"
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text("MARKER = 'installed'\nfrom .sub import VALUE\n")
    (site / "kernels" / "sub.py").write_text("VALUE = 7\n")
    code = ("import sys, kernels; assert sys.path[0] == '', sys.path[:2]; "
            "print(kernels.MARKER, kernels.VALUE, kernels.__file__); "
            "from slpfast.kernels import _host; print('own', _host.__name__)")
    r = _run(code, env_path=f"{ROOT}{os.pathsep}{site}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:3] == ["installed", "7", str(site / "kernels" / "__init__.py")]
    assert "own slpfast.kernels._host" in r.stdout


def test_no_installed_kernels_package_means_the_name_is_not_found():
    # -S: no site-packages, so no installed `kernels`; the checkout's root first on sys.path
    r = _run(f"import sys; sys.path.insert(0, {ROOT!r})\n"
             "try:\n    import kernels\nexcept ModuleNotFoundError as e:\n    print('missing', e.name)\n"
             "else:\n    print('found', kernels.__file__)", "-S")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["missing", "kernels"]


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_transformers_imports_from_the_checkout_root():
    # transformers imports `kernels` at import time of its activations when the package is installed
    r = _run("import transformers.activations; print('ok')")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"
