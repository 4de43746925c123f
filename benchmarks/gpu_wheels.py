"""The wheels a GPU machine without network needs to run benchmarks/gpu_check.sh, made
here where pip reaches a package index:

    bash benchmarks/gpu_wheels.sh             # -> benchmarks/wheels/ (ignored by git)

The GPU machine (Python 3.12, x86-64, manylinux) holds torch 2.11, numpy, sentencepiece,
sacrebleu and the other packages of GPU_IMAGE_PACKAGES. Everything else the project needs
(its dependencies and the deepspeed extra, followed through their own requirements as this
machine's installed metadata states them, markers evaluated for Python 3.12 on Linux
x86-64) is fetched at the version installed here, which the test suite ran with: a binary
wheel for CPython 3.12 on manylinux x86-64 or a pure one where PyPI has it, else a wheel
built here with `pip wheel --no-deps` (deepspeed and antlr4-python3-runtime ship only
source). Plus the project's own wheel. gpu_check.sh installs the folder with
`pip install --no-index --no-deps`, so one version of each, and nothing it does not need.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "benchmarks" / "wheels"
# The working tree and the wheels travel to the GPU machine together, within this.
TRAVEL_LIMIT_BYTES = 64 * 2**20
# What the GPU machine's Python 3.12 environment already holds (the workplace's 'cuda'
# image, as listed on 2026-11-17; torch there is 2.11.0+cu130). Not carried: a second
# version of these would shadow the one the image's torch was installed with.
GPU_IMAGE_PACKAGES = frozenset(
    canonicalize_name(name)
    for name in """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
    linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
    meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
    narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
    nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
    nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
    nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
    onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
    prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
    pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
    pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
    sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
    sentencepiece sentence-transformers setuptools shellingham simplejson six
    sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
    tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
    torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
    typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
    xarray xxhash yarl zipp
    """.split()
)
# Markers evaluated as on the GPU machine.
GPU_MARKER_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}
# The extras gpu_check exercises beyond the base install.
EXTRAS = ("deepspeed",)
# Tags pip accepts on the GPU machine: CPython 3.12, glibc up to 2.39, x86-64.
MANYLINUX = [f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)]
MANYLINUX += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def project_requirements(root: Path = ROOT) -> List[Requirement]:
    """pyproject's dependencies and those of the extras in EXTRAS."""
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in EXTRAS:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def needed_distributions(
    requirements: Iterable[Requirement], present: Set[str] = GPU_IMAGE_PACKAGES
) -> Dict[str, str]:
    """{canonical name: version installed here} of every distribution the requirements
    reach, recursively, that `present` lacks. A present package's own needs are the
    image's business (it imports there)."""
    pending, seen, needed = list(requirements), set(), {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker and not requirement.marker.evaluate(GPU_MARKER_ENV):
            continue
        if name in seen:
            continue
        seen.add(name)
        if name in present:
            continue
        needed[name] = importlib.metadata.version(requirement.name)
        pending += [Requirement(t) for t in importlib.metadata.requires(requirement.name) or []]
    return needed


def installs_on_gpu_machine(filename: str) -> bool:
    """Whether pip on CPython 3.12, Linux x86-64 (glibc 2.39) takes this wheel."""
    _, _, _, tags = parse_wheel_filename(filename)
    for tag in tags:
        python_ok = tag.interpreter in ("py3", "py312", "cp312") or (
            tag.abi == "abi3"
            and re.fullmatch(r"cp3(\d+)", tag.interpreter) is not None
            and int(tag.interpreter[3:]) <= 12
        )
        abi_ok = tag.abi in ("none", "abi3", "cp312")
        platform_ok = tag.platform == "any" or tag.platform in MANYLINUX
        if python_ok and abi_ok and platform_ok:
            return True
    return False


def wheel_names(folder: Path) -> Dict[str, str]:
    """{canonical distribution name: wheel file name} of the wheels in `folder`."""
    return {
        canonicalize_name(parse_wheel_filename(p.name)[0]): p.name
        for p in sorted(folder.glob("*.whl"))
    }


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )


def fetch(name: str, version: str, out: Path) -> str:
    """A binary or pure wheel for the GPU machine from the index, else one built here;
    returns how it was got."""
    platforms = [arg for p in MANYLINUX for arg in ("--platform", p)]
    got = pip(
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version=3.12",
        "--implementation=cp",
        "--abi=cp312",
        "--abi=abi3",
        "--abi=none",
        *platforms,
        "--platform=any",
        "-d",
        str(out),
        f"{name}=={version}",
    )
    if got.returncode == 0:
        return "downloaded"
    # source only: a pure-Python build (DeepSpeed builds no ops without DS_BUILD_OPS), with
    # this machine's torch for deepspeed's setup.py rather than an isolated download of it
    built = pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), f"{name}=={version}")
    if built.returncode != 0:
        raise SystemExit(f"cannot get a wheel of {name}=={version}:\n{built.stderr[-2000:]}")
    return "built here"


def build_project(out: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:  # build/ and egg-info stay out of the tree
        tree = Path(scratch) / "src"
        shutil.copytree(
            ROOT,
            tree,
            ignore=shutil.ignore_patterns(".git", "wheels", "results", "__pycache__", "*.egg-info"),
        )
        built = pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(tree))
    if built.returncode != 0:
        raise SystemExit(f"cannot build the project's wheel:\n{built.stderr[-2000:]}")


def tree_bytes(root: Path = ROOT) -> int:
    """What the working tree adds to the journey: git's tracked and untracked files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum((root / p).stat().st_size for p in listed.split("\0") if p and (root / p).is_file())


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=WHEELS)
    args = parser.parse_args(argv)
    needed = needed_distributions(project_requirements())
    with tempfile.TemporaryDirectory() as scratch:
        staging = Path(scratch)
        for name, version in sorted(needed.items()):
            print(f"gpu_wheels: {name}=={version}: {fetch(name, version, staging)}", flush=True)
        build_project(staging)
        wrong = [p.name for p in staging.glob("*.whl") if not installs_on_gpu_machine(p.name)]
        if wrong:
            raise SystemExit(f"not installable on Python 3.12 x86-64: {wrong}")
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(staging, args.out)
    size = sum(p.stat().st_size for p in args.out.glob("*.whl"))
    tree = tree_bytes()
    print(
        f"gpu_wheels: {len(list(args.out.glob('*.whl')))} wheels in {args.out}, "
        f"{size / 2**20:.1f} MiB; with the working tree ({tree / 2**20:.1f} MiB) "
        f"{(size + tree) / 2**20:.1f} of {TRAVEL_LIMIT_BYTES / 2**20:.0f} MiB"
    )
    if size + tree > TRAVEL_LIMIT_BYTES:
        raise SystemExit("gpu_wheels: over the limit of what travels to the GPU machine")


if __name__ == "__main__":
    main()
