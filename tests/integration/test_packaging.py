"""The wheel: it carries every module, the report page's templates and the shipped search spaces,
and an installed asha-tune (not an editable checkout) lists those spaces from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.helpers.data import REPO


def test_an_installed_wheel_carries_and_lists_the_shipped_search_spaces(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--wheel-dir",
            str(dist),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("asha_tune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (REPO / "search_spaces").glob("*.yaml"))
    assert sorted(Path(n).name for n in names if n.startswith("asha_tune/search_spaces/")) == shipped
    templates = {str(p.relative_to(REPO)) for p in (REPO / "asha_tune" / "analysis" / "templates").iterdir()}
    assert "asha_tune/analysis/templates/report.html.j2" in templates
    assert templates <= names, f"the report page's templates left out of the wheel: {templates - names}"
    modules = {str(p.relative_to(REPO)) for p in (REPO / "asha_tune").rglob("*.py")}
    assert modules <= names, f"left out of the wheel (add the package to pyproject.toml): {modules - names}"

    # A fresh environment outside the source tree; its dependencies come from this one's
    # site-packages (a plain path entry, so this checkout's editable hook stays off).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"  # no ./search_spaces here
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ASHA_TUNE_SPACES", "PYTHONPATH")}
    where = subprocess.run(
        [str(python), "-c", "import asha_tune.spaces as s; print(s.__file__); print(s.PACKAGE_SPACES)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    module, spaces_dir = where.stdout.split()
    assert Path(module).is_relative_to(venv), where.stdout
    assert Path(spaces_dir).is_relative_to(venv), where.stdout
    listed = subprocess.run(
        [str(venv / "bin" / "asha-tune"), "spaces"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    table = listed.stdout.split("\n\n")[0].splitlines()  # a name per space; its needs indented below
    names = [line.split()[0] for line in table if line and not line[0].isspace()]
    assert sorted(names) == [Path(n).stem for n in shipped]
