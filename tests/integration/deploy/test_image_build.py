"""The image's build steps without Docker: the build context the Dockerfile copies is assembled in a temp
dir, the project's wheel is built from it (offline: no dependencies, no build isolation) and installed
into a separate directory, and its `sfu` console script runs from there."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from tests.unit.deploy.dockerfile import DOCKERFILE, REPO, copy_sources, stages

pytestmark = pytest.mark.timeout(240)

IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


async def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv), cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 180)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"{argv} failed:\n{out.decode()[-3000:]}"
    return out.decode()


def build_context(target: Path) -> None:
    """What `COPY` puts into the build stage's /src."""
    _, found = stages(DOCKERFILE.read_text())
    for source in copy_sources(found[0]):
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, target / source, ignore=IGNORE)
        else:
            shutil.copy2(path, target / source)


async def test_the_wheel_holds_the_packages_and_its_console_script_runs_once_installed(
    tmp_path: Path,
) -> None:
    context, wheels, prefix = tmp_path / "src", tmp_path / "wheels", tmp_path / "site"
    context.mkdir()
    build_context(context)
    await run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
        "--no-index", "--wheel-dir", wheels, ".", cwd=context,
    )
    [wheel] = wheels.glob("pysfu-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "sfu = sfu.cli:main" in archive.read(entry_points).decode()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "Requires-Dist: aiortc==1.16.0" in archive.read(metadata).decode()
        assert "Provides-Extra: redis" in archive.read(metadata).decode()  # the image installs pysfu[redis]
    for module in ("sfu/__init__.py", "sfu/py.typed", "sfu/cli.py", "sfu/media/bridge.py",
                   "sfu/signaling/health.py", "client_sdk/__init__.py", "loadtest/__init__.py"):
        assert module in names, module
    assert not any(n.startswith(("tests/", "web/")) for n in names)

    await run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir",
        "--target", prefix, wheel, cwd=tmp_path,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")} | {"PYTHONPATH": str(prefix)}
    script = prefix / "bin" / "sfu"
    assert (await run(script, "--version", cwd=tmp_path, env=env)).strip() == "sfu 0.1.0"
    assert "--rtc-port-range" in await run(script, "serve", "--help", cwd=tmp_path, env=env)
    where = await run(sys.executable, "-c", "import sfu; print(sfu.__file__)", cwd=tmp_path, env=env)
    assert Path(where.strip()).is_relative_to(prefix), where
