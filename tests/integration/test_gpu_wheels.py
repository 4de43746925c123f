"""The wheel folder benchmarks/gpu_wheels.sh prepares for the GPU machine (no network
there): every wheel installs on CPython 3.12 x86-64, nothing the project needs is missing,
nothing the machine has is shadowed, and with the working tree it fits what travels.

The folder is made where a package index is reachable (`bash benchmarks/gpu_wheels.sh`,
about a minute); without it the folder tests skip, saying so."""

import importlib.metadata
import re
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.imports import imported_top_level_modules
from tests.helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_wheels  # noqa: E402

WHEELS = ROOT / "benchmarks" / "wheels"
needs_folder = pytest.mark.skipif(
    not any(WHEELS.glob("*.whl")),
    reason="no benchmarks/wheels: run `bash benchmarks/gpu_wheels.sh` (needs a package index)",
)


@pytest.mark.parametrize(
    "filename, installs",
    [
        ("hydra_core-1.3.8-py3-none-any.whl", True),
        ("pydantic_core-2.46.4-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("wandb-0.31.0-py3-none-manylinux_2_28_x86_64.whl", True),
        ("orjson-3.10.0-cp38-abi3-manylinux_2_17_x86_64.whl", True),
        ("pydantic_core-2.46.4-cp311-cp311-manylinux_2_17_x86_64.whl", False),  # other Python
        ("pydantic_core-2.46.4-cp312-cp312-manylinux_2_17_aarch64.whl", False),  # other CPU
        ("pydantic_core-2.46.4-cp312-cp312-macosx_11_0_arm64.whl", False),
        ("x-1.0-cp312-cp312-manylinux_2_41_x86_64.whl", False),  # glibc newer than 2.39
        ("x-1.0-cp312-cp312-musllinux_1_2_x86_64.whl", False),
    ],
)
def test_which_wheels_install_on_the_gpu_machine(filename, installs):
    assert gpu_wheels.installs_on_gpu_machine(filename) is installs


def test_what_the_image_lacks_is_followed_through_requirements_and_markers(monkeypatch):
    """A package the image has stops the walk (its needs are the image's); markers are
    those of Python 3.12 on Linux; extras are not followed."""
    requires = {
        "wanted": ["present-lib", "transitive>=1", "old-backport; python_version < '3.9'"],
        "transitive": ["docs-only; extra == 'docs'", "win-only; sys_platform == 'win32'"],
        "present-lib": ["hidden-dep"],
    }
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: requires.get(name, []))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: f"{name}-version")
    needed = gpu_wheels.needed_distributions([Requirement("wanted")], present={"present-lib"})
    assert needed == {"wanted": "wanted-version", "transitive": "transitive-version"}


def wheel_requirements(path: Path) -> List[Requirement]:
    """Requires-Dist of a wheel, from its own METADATA (not this machine's install)."""
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(name).decode()
    return [Requirement(t) for t in re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)]


@needs_folder
def test_every_wheel_installs_on_python_312_x86_64_one_version_each():
    files = sorted(p.name for p in WHEELS.glob("*.whl"))
    assert [f for f in files if not gpu_wheels.installs_on_gpu_machine(f)] == []
    assert len(gpu_wheels.wheel_names(WHEELS)) == len(files)  # no name twice


@needs_folder
def test_nothing_the_project_needs_is_missing_and_nothing_present_is_shadowed():
    """Every requirement of the project (base and deepspeed extra) and of each wheel, by
    the wheels' own metadata under Python 3.12 markers, is met by the image or a wheel."""
    wheels = gpu_wheels.wheel_names(WHEELS)
    assert "dist-lstm" in wheels
    assert not set(wheels) & gpu_wheels.GPU_IMAGE_PACKAGES
    requirements = list(gpu_wheels.project_requirements())
    for filename in wheels.values():
        requirements += wheel_requirements(WHEELS / filename)
    unmet = {
        str(r)
        for r in requirements
        if not (r.marker and not r.marker.evaluate(gpu_wheels.GPU_MARKER_ENV))
        and canonicalize_name(r.name) not in gpu_wheels.GPU_IMAGE_PACKAGES | set(wheels)
    }
    assert unmet == set()
    for name, filename in wheels.items():  # the versions the suite ran with here
        if name != "dist-lstm":
            assert f"-{importlib.metadata.version(name)}-" in filename, filename


@needs_folder
def test_every_module_gpu_check_runs_imports_comes_from_the_image_or_a_wheel():
    """The package, train.py, the benchmarks and the CUDA tests (what gpu_check runs): each
    third-party module they import belongs to a distribution the GPU machine will have.
    Optional features' modules (Optuna, submitit) are imported only when used."""
    files = [ROOT / "train.py", ROOT / "tests" / "conftest.py"]
    files += [*(ROOT / "dist_lstm").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    files += list((ROOT / "tests" / "gpu").glob("*.py"))
    own = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} | {"dist_lstm", "tests"}
    optional = {"optuna", "hydra_plugins", "submitit"}  # dist_lstm/extras.py names the extra
    not_wheels = own | set(sys.stdlib_module_names) | optional
    have = gpu_wheels.GPU_IMAGE_PACKAGES | set(gpu_wheels.wheel_names(WHEELS))
    providers: Dict[str, List[str]] = importlib.metadata.packages_distributions()
    unmet = set()
    for path in files:
        for module in imported_top_level_modules(path) - not_wheels:
            distributions = {canonicalize_name(d) for d in providers.get(module, [])}
            if not distributions & have:
                unmet.add(f"{path.relative_to(ROOT)}: {module} ({sorted(distributions)})")
    assert unmet == set()


@needs_folder
def test_the_wheels_and_the_working_tree_fit_what_travels_to_the_gpu():
    wheels = sum(p.stat().st_size for p in WHEELS.glob("*.whl"))
    assert wheels + gpu_wheels.tree_bytes() < gpu_wheels.TRAVEL_LIMIT_BYTES
