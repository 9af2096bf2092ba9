"""The package layers `make lint` checks (import-linter contracts in pyproject.toml): kept by the
code, and broken by a planted import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


def lint(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS)], cwd=folder, capture_output=True, text=True, timeout=120
    )


def copy_packages(target: Path) -> Path:
    for package in ("tvconv", "studies", "analysis"):
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def test_the_code_keeps_its_layers():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        (
            "tvconv/kernels.py",
            "import studies.store",
            "tvconv imports neither studies nor analysis",
        ),
        (
            "tvconv/metrics.py",
            "import analysis.stats",
            "tvconv imports neither studies nor analysis",
        ),
        ("studies/store.py", "import analysis.frame", "studies does not import analysis"),
    ],
)
def test_a_planted_violation_breaks_the_lint(tmp_path, module, planted, broken):
    copy = copy_packages(tmp_path)
    with (copy / module).open("a") as handle:
        handle.write(f"\n{planted}  # planted\n")
    done = lint(copy)
    assert done.returncode != 0
    assert f"{broken} BROKEN" in done.stdout
