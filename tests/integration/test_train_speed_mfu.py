"""train_speed.py's MFU denominators: the measured GEMM in the precision the training's
products run in (TF32 where trainer.tf32 turns it on) and the GPU's rated dense peak in
that precision, each named. In-process, on the CPU: the GPU figures are looked up, not
measured."""

import sys

import pytest

from tests.helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import train_speed  # noqa: E402


@pytest.mark.parametrize(
    "name, part, bf16, tf32, fp32",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.0, 495.0, 67.0),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.0, 378.0, 51.0),
        ("NVIDIA H100 NVL", "H100 NVL", 835.0, 418.0, 60.0),
        ("NVIDIA H200", "H200", 989.0, 495.0, 67.0),
        ("NVIDIA H200 NVL", "H200 NVL", 835.0, 418.0, 60.0),
        ("NVIDIA A100-SXM4-80GB", "A100", 312.0, 156.0, 19.5),
    ],
)
def test_rated_dense_peak_by_gpu_name(name, part, bf16, tf32, fp32):
    found, rates = train_speed.rated_peak(name)
    assert found == part
    assert rates == {"bf16": bf16, "fp16": bf16, "tf32": tf32, "fp32": fp32}


def test_an_unknown_gpu_has_no_rated_peak():
    assert train_speed.rated_peak("Tesla T4") is None


@pytest.mark.parametrize(
    "precision, tf32, products",
    [("32", True, "tf32"), ("32", False, "fp32"), ("bf16", True, "bf16"), ("fp16", False, "fp16")],
)
def test_the_products_precision_follows_autocast_then_tf32(precision, tf32, products):
    assert train_speed.product_precision(precision, tf32) == products


def test_mfu_names_each_denominator_in_the_products_precision():
    figures = train_speed.mfu_figures(49_500.0, "tf32", 99_000.0, "NVIDIA H100 80GB HBM3")
    assert figures == {
        "products": "tf32",
        "achieved_tflops": 49.5,
        "vs_measured_gemm": {
            "denominator": "measured 2048^3 GEMM, tf32",
            "tflops": 99.0,
            "mfu": 0.5,
        },
        "vs_rated_peak": {
            "denominator": "H100 SXM rated dense tf32",
            "gpu": "NVIDIA H100 80GB HBM3",
            "tflops": 495.0,
            "mfu": pytest.approx(0.1),
        },
    }
    assert train_speed.mfu_figures(10.0, "fp32", 20.0, None)["vs_rated_peak"] is None


def test_step_breakdown_configures_tf32_as_train_py_does(monkeypatch):
    """The GEMM rate is timed after the breakdown, in the process it configured: TF32 is
    set from trainer.tf32 there, and reported."""
    calls = []

    def configure(enabled, device):
        calls.append((enabled, device.type))
        return enabled  # as on a GPU that has TF32

    monkeypatch.setattr(train_speed, "configure_tf32", configure)
    overrides = ["experiment=smoke", "trainer.tf32=false", "data.max_train_examples=200"]
    breakdown = train_speed.step_breakdown(overrides, 1)
    assert calls == [(False, "cpu")] and breakdown["tf32"] is False
