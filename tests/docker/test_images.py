"""Docker images without a Docker engine: COPY sources exist, and each image's command really starts.

The service image's command runs from a clean virtual environment (no system site-packages) built from
the image's own requirements file, over a file tree laid out as the image's COPY instructions lay it
out, with a tiny bundle where the image expects its bundle mount. The virtual environment is cached
under $BERTKIT_CACHE/test-venvs (keyed by the requirements' hash), so only the first run pays for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.docker.dockerfile import assemble, parse, rebase
from tests.service.live_service import free_port, running

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
IMAGES = ["Dockerfile", "Dockerfile.gpu", "Dockerfile.train"]
SERVICE_IMAGES = ["Dockerfile", "Dockerfile.gpu"]


def _requirements(df) -> Path:
    """The requirements file the image installs (the COPY of docker/requirements-*.txt)."""
    for copy in df.copies:
        for source in copy.sources:
            if source.startswith("docker/requirements-"):
                return REPO / source
    raise AssertionError(f"{df.path.name} copies no docker/requirements-*.txt")


def _requirement_names(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.lower()] = version
    return out


@pytest.mark.parametrize("name", IMAGES)
def test_every_copy_source_exists(name):
    df = parse(DOCKER / name)
    assert df.copies, f"{name} copies nothing"
    for copy in df.copies:
        assert "from" not in copy.flags
        for source in copy.sources:
            assert (REPO / source).exists(), f"{name}: COPY {source} names a file missing from the build context"


@pytest.mark.parametrize("name", IMAGES)
def test_images_run_as_a_non_root_user(name):
    df = parse(DOCKER / name)
    assert df.user not in (None, "root", "0"), f"{name} runs as root"
    useradd = [rest for kw, rest in df.instructions if kw == "RUN" and "useradd" in rest]
    assert useradd and df.user in useradd[0]


def test_service_images_have_no_torch_and_share_their_entry_points():
    cpu, gpu = parse(DOCKER / "Dockerfile"), parse(DOCKER / "Dockerfile.gpu")
    cpu_reqs, gpu_reqs = _requirement_names(_requirements(cpu)), _requirement_names(_requirements(gpu))
    for reqs in (cpu_reqs, gpu_reqs):
        assert "torch" not in reqs and "transformers" not in reqs
        assert "tokenizers" in reqs and "fastapi" in reqs
    assert "onnxruntime" in cpu_reqs and "onnxruntime-gpu" in gpu_reqs
    assert {k: v for k, v in cpu_reqs.items() if k != "onnxruntime"} == {
        k: v for k, v in gpu_reqs.items() if k != "onnxruntime-gpu"
    }, "the GPU image should differ from the CPU one only by onnxruntime-gpu"
    assert cpu.base_images[-1].startswith("python:") and cpu.base_images[-1].endswith("-slim")
    assert "nvidia/cuda" in gpu.base_images[-1] and "runtime" in gpu.base_images[-1]
    assert cpu.command == gpu.command and cpu.healthcheck == gpu.healthcheck
    assert cpu.env["PORT"] == gpu.env["PORT"] and int(cpu.env["PORT"]) in cpu.expose
    assert cpu.env["BERTKIT_BUNDLE_ROOT"] == "/bundles"
    # The training code never enters a service image.
    assert not any(s.startswith("training") for c in cpu.copies + gpu.copies for s in c.sources)
    # Baking bundles in is a build argument whose default is an (almost) empty directory.
    assert cpu.args["BUNDLES_DIR"] == "docker/bundles"


def _venv_for(requirements: Path) -> Path:
    """A virtual environment with exactly `requirements` installed (built once, then reused)."""
    cache = Path(os.environ.get("BERTKIT_CACHE") or Path.home() / ".cache" / "bertkit") / "test-venvs"
    key = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = cache / f"{requirements.stem}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
        if (venv / ".complete").is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        result = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise AssertionError(f"pip install -r {requirements.name} failed:\n{result.stderr[-3000:]}")
        (venv / ".complete").write_text("ok\n")
    return venv


def _image_env(df, root: Path, venv: Path, prefixes: set[str], **overrides: str) -> dict[str, str]:
    """The image's ENV (paths moved under `root`) on a bare environment, plus `docker run -e` overrides."""
    env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8"}
    env.update({k: rebase(v, root, prefixes) for k, v in df.env.items() if k != "PATH"})
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """The CPU service image's file tree, with two tiny bundles where the bundle mount goes."""
    pytest.importorskip("torch")
    from tests.helpers.bundles import make_tiny_bundle

    df = parse(DOCKER / "Dockerfile")
    root = tmp_path_factory.mktemp("image")
    assemble(df, REPO, root)
    bundles = root / df.env["BERTKIT_BUNDLE_ROOT"].lstrip("/")
    work = tmp_path_factory.mktemp("bundle-build")
    for task, name in (("sequence-classification", "sentiment"), ("token-classification", "entities")):
        shutil.copytree(make_tiny_bundle(work, task, name=name), bundles / name)
    prefixes = {"/" + Path(c.dest.lstrip("/")).parts[0] for c in df.copies} | {df.workdir}
    prefixes.discard("/tmp")
    return df, root, prefixes


def test_service_image_command_starts_from_a_clean_venv(image_root, tmp_path):
    df, root, prefixes = image_root
    venv = _venv_for(_requirements(df))
    # The venv is clean: what the image does not install cannot be imported.
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    port = free_port()
    env = _image_env(
        df, root, venv, prefixes, PORT=str(port), HOST="127.0.0.1", BERTKIT_INTRA_OP_THREADS="1", OMP_NUM_THREADS="1"
    )
    command = [rebase(part, root, prefixes) for part in df.command]
    workdir = Path(rebase(df.workdir, root, prefixes))
    with running(command, tmp_path / "image.log", port, env=env, cwd=workdir, timeout=180) as live:
        url = live.url
        assert httpx.get(f"{url}/health").status_code == 200
        names = {m["name"] for m in httpx.get(f"{url}/v1/models").json()["models"]}
        assert names == {"sentiment", "entities"}
        answer = httpx.post(f"{url}/v1/classify", json={"inputs": "a great film"})
        assert answer.status_code == 200 and answer.json()["model"] == "sentiment"
        assert "<title>bertkit playground</title>" in httpx.get(f"{url}/").text
        # The image's HEALTHCHECK, run the way Docker runs it (inside the container, same env).
        health = [rebase(part, root, prefixes) for part in df.healthcheck]
        check = subprocess.run(health, env=env, cwd=workdir, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    # `docker stop` sends SIGTERM: the service drains and shuts down cleanly (uvicorn re-raises the signal
    # after its shutdown, so the status is 0 or "terminated by SIGTERM"); then the check reports unhealthy.
    log = (tmp_path / "image.log").read_text()
    assert live.proc.returncode in (0, -15) and "Application shutdown complete" in log, log[-2000:]
    check = subprocess.run(health, env=env, cwd=workdir, capture_output=True, text=True, timeout=30)
    assert check.returncode == 1 and "/ready" in check.stderr


def test_service_image_without_bundles_says_where_to_put_them(tmp_path):
    df = parse(DOCKER / "Dockerfile")
    root = tmp_path / "image"
    assemble(df, REPO, root)
    shutil.rmtree(root / "bundles")
    (root / "bundles").mkdir()
    prefixes = {"/app", "/bundles"}
    env = _image_env(df, root, Path(sys.prefix), prefixes, PORT=str(free_port()))
    command = [rebase(part, root, prefixes) for part in df.command]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no bundles under" in result.stderr and "-v" in result.stderr


def test_train_image_entry_runs_torchrun_on_the_bert_cli(tmp_path):
    pytest.importorskip("torch")
    df = parse(DOCKER / "Dockerfile.train")
    assert df.entrypoint[0] == "torchrun" and df.entrypoint[-2:] == ["-m", "cli.main"]
    reqs = (REPO / "constraints.txt").read_text()
    assert any(c.sources == ["pyproject.toml", "constraints.txt"] for c in df.copies) and "torch==" in reqs
    # The entry point as the image runs it, with a bert command (the train image installs this package).
    launcher = shutil.which("torchrun") or pytest.fail("torchrun is not on PATH (torch installs it)")
    command = [launcher, *df.entrypoint[1:], "pretrain", "--help"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: bert pretrain" in result.stdout
