"""Lints the Dockerfile (Docker cannot run here): multi-stage on a slim Python 3.11, non-root, `sfu serve`
as the entry point, a health check, the signaling port and the ICE UDP range exposed as configured."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import pytest

from sfu import config as cfg
from tests.unit.deploy.dockerfile import DOCKERFILE, DOCKERIGNORE, KNOWN, REPO, Stage, copy_sources, stages

ARGS, STAGES = stages(DOCKERFILE.read_text())
RUNTIME = STAGES[-1]


def ignored(path: str) -> bool:
    lines = [p.strip() for p in DOCKERIGNORE.read_text().splitlines()]
    patterns = [p for p in lines if p and not p.startswith("#")]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_every_instruction_is_known_and_no_add_or_latest_tag_is_used() -> None:
    for stage in STAGES:
        for instruction in stage.instructions:
            assert instruction.keyword in KNOWN, instruction
            assert instruction.keyword != "ADD", f"line {instruction.line}: use COPY"
        assert not stage.image.endswith(":latest") and ":" in stage.image, stage.image


def test_it_is_multi_stage_on_a_slim_python_of_the_projects_version() -> None:
    assert len(STAGES) >= 2 and STAGES[0].name == "build"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    version = requires.removeprefix(">=")
    for stage in STAGES:
        assert re.fullmatch(rf"python:{re.escape(version)}-slim(-\w+)?", stage.image), stage.image
    assert not any("build-essential" in i.args for i in RUNTIME.all("RUN")), "no compiler in the runtime"


def test_the_runtime_runs_sfu_serve_as_a_non_root_user_with_a_health_check() -> None:
    [user] = RUNTIME.all("USER")
    assert user.args not in ("root", "0") and not user.args.startswith("0:")
    assert any("useradd" in i.args and user.args in i.args for i in RUNTIME.all("RUN"))
    [entrypoint] = RUNTIME.all("ENTRYPOINT")
    assert entrypoint.exec_form() == ["sfu", "serve"]
    [health] = RUNTIME.all("HEALTHCHECK")
    assert health.exec_form() == ["sfu", "health"]
    assert [s.args for s in RUNTIME.all("STOPSIGNAL")] == ["SIGTERM"]
    instructions = RUNTIME.instructions
    last_run = max(instructions.index(i) for i in RUNTIME.all("RUN"))
    assert instructions.index(user) > last_run, "USER comes after the last RUN"


def test_its_settings_are_valid_and_the_exposed_ports_are_the_configured_ones() -> None:
    env = RUNTIME.env()
    config = cfg.load(None, {k: v for k, v in env.items() if k.startswith("SFU_")})
    assert config.host == "0.0.0.0" and str(config.data_dir) == "/data"
    assert config.rtc_port_range is not None
    low, high = config.rtc_port_range
    exposed = " ".join(i.args for i in RUNTIME.all("EXPOSE")).split()
    assert f"{config.port}/tcp" in exposed and f"{low}-{high}/udp" in exposed
    assert str(config.web_root) in " ".join(i.args for i in RUNTIME.all("COPY"))
    assert any("/data" in v.args for v in RUNTIME.all("VOLUME"))


def test_apt_and_pip_leave_no_caches_in_a_layer() -> None:
    for stage in STAGES:
        for run in stage.all("RUN"):
            if "apt-get install" in run.args:
                assert "--no-install-recommends" in run.args and "rm -rf /var/lib/apt/lists" in run.args, run
            if re.search(r"\bpip (install|wheel)\b", run.args):
                assert "--no-cache-dir" in run.args, run


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name or s.image)
def test_every_copied_path_exists_and_is_not_excluded_by_dockerignore(stage: Stage) -> None:
    for source in copy_sources(stage):
        assert (REPO / source).exists(), source
        assert not ignored(source), f"{source} is excluded by .dockerignore"


def test_the_build_copies_every_package_of_the_project_and_keeps_state_out_of_the_context() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(copy_sources(STAGES[0]))
    for pattern in include:
        assert pattern.rstrip("*") in copied, pattern
    assert project["project"]["readme"] in copied
    for path in (".venv", ".git", "data", "test-artifacts"):
        assert ignored(path), path


def test_the_image_installs_the_redis_extra_so_serve_redis_works() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("redis") for dep in extras["redis"])
    assert any(re.search(r"\bpip wheel\b.*\"\.\[redis\]\"", run.args) for run in STAGES[0].all("RUN"))
    assert any(re.search(r"\bpip install\b.*\"pysfu\[redis\]\"", run.args) for run in RUNTIME.all("RUN"))
