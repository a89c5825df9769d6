"""Packaging as a user meets it: what pyproject.toml promises, what an sdist holds."""
import ast
import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: standard-library modules newer than some Python that requires-python could admit
_STDLIB_SINCE = {"tomllib": (3, 11), "wsgiref.types": (3, 11), "zoneinfo": (3, 9), "graphlib": (3, 9)}


def _python_sources():
    for top in ("slpfast", "kernels"):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            yield from (os.path.join(d, f) for f in files if f.endswith(".py"))


def test_requires_python_admits_no_python_the_code_cannot_import_on():
    """requires-python said >=3.10 while the pre-training and fine-tuning configs import tomllib
    (3.11+): on Python 3.10 `pip install` accepted slpfast and `python -m slpfast.pretrain`
    died with ModuleNotFoundError: tomllib."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        spec = tomllib.load(f)["project"]["requires-python"]
    m = re.fullmatch(r"\s*>=\s*(\d+)\.(\d+)\s*", spec)
    assert m, f"requires-python is expected as '>=X.Y', got {spec!r}"
    floor = (int(m.group(1)), int(m.group(2)))
    too_new = []
    for path in _python_sources():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                need = _STDLIB_SINCE.get(name)
                if need and need > floor:
                    too_new.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} imports {name} (Python {need[0]}.{need[1]}+)")
    assert not too_new, f"requires-python = {spec!r} but:\n" + "\n".join(too_new)


def _copy_checkout(dst):
    """The checkout as a user has it after building in place (its _C*.so and build record
    included, to see that they stay out), without the venv, git data and run folders."""
    import shutil

    shutil.copytree(ROOT, dst, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "dist", ".pytest_cache", "__pycache__", "*.egg-info", ".cache"))
    return dst


def test_sdist_holds_every_source_the_build_and_the_cpp_tests_need(tmp_path):
    """The sdist held only the .cpp files setup.py names on this machine: no headers (building
    from it failed on `pack.h: No such file or directory`), no .cu / cuda_impl.cpp (a CPU-made
    sdist could never build with CUDA), no CMakeLists.txt nor tests/cpp."""
    import subprocess
    import sys
    import tarfile

    src = _copy_checkout(tmp_path / "src")
    out = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=src,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    (sdist,) = (tmp_path / "dist").glob("slpfast-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    want = {"setup.py", "pyproject.toml", "CMakeLists.txt", "README.md", "slpfast/_source_hash.py",
            "kernels/__init__.py"}
    for top in ("csrc", os.path.join("tests", "cpp")):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            want |= {os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/") for f in files
                     if f.endswith((".h", ".cpp", ".cu", ".cuh"))}
    assert want - names == set()
    unwanted = sorted(n for n in names if n.endswith((".so", ".o", ".pyc")) or "_build_info.json" in n
                      or n.startswith(("build/", ".venv/", "runs/")))
    assert unwanted == []


def _fake_checkout(tmp_path, fake_cuda_torch: bool):
    """A checkout whose .ci/setup runs for real against a .venv/bin/python that is this python,
    except that `pip` only logs its arguments and, when asked, torch claims to be a CUDA build.
    slpfast/ is this checkout's (its built extension included); csrc/ is a copy to edit."""
    import shutil
    import stat
    import subprocess
    import sys

    from slpfast import _extension

    status = _extension.load()
    if not status.loaded or status.stale:
        import pytest

        pytest.skip(f"needs a current build of the extension in this checkout ({status.problem or 'stale'})")
    root = tmp_path / "checkout"
    (root / ".ci").mkdir(parents=True)
    for name in ("setup", "requirements-cpu.txt"):
        shutil.copy2(os.path.join(ROOT, ".ci", name), root / ".ci" / name)
    shutil.copytree(os.path.join(ROOT, "csrc"), root / "csrc")
    os.symlink(os.path.join(ROOT, "slpfast"), root / "slpfast")
    os.symlink(os.path.join(ROOT, "setup.py"), root / "setup.py")
    (root / ".venv" / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    shim = root / ".venv" / "bin" / "python"
    cuda_line = ('if [ "$1" = -c ] && [[ "$2" == *"torch.version.cuda else 1)"* ]]; then exit 0; fi\n'
                 if fake_cuda_torch else "")
    shim.write_text("#!/bin/bash\n"
                    f'if [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> {log}; exit 0; fi\n'
                    + cuda_line + f'exec {sys.executable} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    want = subprocess.run(f"sha256sum < {root}/.ci/requirements-cpu.txt | cut -c1-16", shell=True,
                          capture_output=True, text=True, check=True).stdout
    (root / ".venv" / ".slpfast-requirements").write_text(want)

    def run_setup():
        env = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST", "SLPFAST_NO_CUDA")}
        out = subprocess.run(["bash", str(root / ".ci" / "setup")], capture_output=True, text=True, timeout=120, env=env)
        pip = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return out, pip

    return root, run_setup


def test_ci_setup_on_a_cuda_torch_builds_only_when_something_changed(tmp_path):
    """On a GPU machine (a CUDA torch in the venv) .ci/setup ran `pip install -e .` every time:
    a full CUDA rebuild of the extension (minutes) on each run, though the README says later
    runs rebuild only what changed."""
    _, run_setup = _fake_checkout(tmp_path, fake_cuda_torch=True)
    for _ in range(2):
        out, pip = run_setup()
        assert out.returncode == 0, out.stdout + out.stderr
        assert "using the installed CUDA torch" in out.stdout
        assert pip == [], out.stdout
        assert "slpfast._C is up to date" in out.stdout


def test_ci_setup_rebuilds_after_a_pull_that_changed_csrc_and_checks_the_result(tmp_path):
    root, run_setup = _fake_checkout(tmp_path, fake_cuda_torch=False)
    out, pip = run_setup()
    assert out.returncode == 0 and pip == [], out.stdout + out.stderr
    with open(root / "csrc" / "core" / "pack.cpp", "a") as f:
        f.write("\n// pulled\n")
    out, pip = run_setup()
    assert [p for p in pip if "-e ." in p], out.stdout
    assert "building the extension slpfast._C (csrc/ changed since the build)" in out.stdout
    # pip only logged here, so the build is still stale: setup says so and fails instead of 'done'
    assert out.returncode == 1 and "built but is not usable: csrc/ changed" in out.stderr, out.stdout + out.stderr
