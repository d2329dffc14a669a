"""The operator's image ships neither the development tools nor the local engine, and needs neither."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Run the CLI in a fresh interpreter in which the dev-only packages cannot be imported, as in the image.
_WITHOUT_DEV = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "steadfast_engine" or name.startswith(("steadfast_engine.", "steadfast.dev")):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Absent())
from steadfast.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_without_dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_DEV, *args], capture_output=True, text=True, timeout=60)


def test_the_image_builds_without_the_dev_packages() -> None:
    """They are removed from the source before `pip install .`, so the installed file list never names them."""
    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    build = next(line for line in dockerfile.splitlines() if line.startswith("RUN") and "pip install" in line)
    removed = re.findall(r"rm -rf ((?:operator/\S+\s*)+)", build.split("pip install")[0])
    assert removed and sorted(removed[0].split()) == ["operator/steadfast/dev", "operator/steadfast_engine"]


def test_the_operators_commands_work_without_them() -> None:
    for command in (
        ["run", "--help"],
        ["approve", "--help"],
        ["status", "--help"],
        ["crds", "--help"],
        ["console", "--help"],
    ):
        done = cli_without_dev(*command)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    listed = cli_without_dev("--help").stdout
    assert "run" in listed and "dev" not in listed.split("{", 1)[1].split("}", 1)[0].split(",")


def test_with_them_dev_is_there() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "steadfast.cli", "dev", "engine", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--port" in done.stdout
