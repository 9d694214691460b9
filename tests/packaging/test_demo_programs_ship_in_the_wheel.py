"""`agent-mesh demo` from an installed wheel: the example agents it runs and the sample
manifests it applies are package data, and the demo finds them inside the installed
package, not in a source tree (the wheel is built and installed offline, into a folder
away from this tree)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "operator", "examples", "config/samples")
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
SAMPLES = sorted(p.name for p in (ROOT / "config" / "samples").glob("*.yaml"))


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, cwd=cwd, env=env, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built with the dev extra's setuptools from a copy of the tree's
    sources (links kept as links, as git checks them out; the tree is left as it is)."""
    import setuptools

    major = int(setuptools.__version__.split(".")[0])
    assert major >= 77, f"setuptools {setuptools.__version__}: the dev extra needs >= 77"
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in SOURCES:
        origin, copy = ROOT / name, source / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            shutil.copytree(origin, copy, symlinks=True, ignore=ignore)
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copy)
    pip = (sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation")
    run(*pip, "--no-index", "-w", str(work / "dist"), str(source))
    (built,) = (work / "dist").glob("agent_mesh-*.whl")
    return built


def test_the_wheel_carries_each_example_agent_and_sample_manifest_as_in_the_tree(
    wheel: Path,
) -> None:
    assert "echo_worker.py" in EXAMPLES and "meshtask-summarize.yaml" in SAMPLES
    with zipfile.ZipFile(wheel) as archive:
        for folder, origin, names in (
            ("examples", ROOT / "examples", EXAMPLES),
            ("samples", ROOT / "config" / "samples", SAMPLES),
        ):
            for name in names:
                shipped = archive.read(f"agent_mesh/{folder}/{name}")
                assert shipped == (origin / name).read_bytes(), name


def test_the_demo_runs_its_agents_and_samples_from_the_installed_package(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    pip = (sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index")
    run(*pip, "--target", str(site), str(wheel))
    probe = (
        "import json, agent_mesh\n"
        "from agent_mesh import testing\n"
        "from agent_mesh.testing import demo\n"
        "print(json.dumps({'package': agent_mesh.__file__,\n"
        "  'programs': [str(testing.example_program(p)) for p in demo.DEMO_AGENTS.values()],\n"
        "  'samples': str(demo._samples_dir(None))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    found = json.loads(
        run(sys.executable, "-c", probe, cwd=tmp_path, env={**env, "PYTHONPATH": str(site)})
    )
    package = site / "agent_mesh"
    assert Path(found["package"]).parent == package
    assert found["programs"], found
    for program in map(Path, found["programs"]):
        assert program.parent == package / "examples" and program.is_file()
        assert not program.is_symlink()
    samples = Path(found["samples"])
    assert samples == package / "samples"
    assert sorted(p.name for p in samples.glob("*.yaml")) == SAMPLES
    assert ROOT not in [samples, *samples.parents]
