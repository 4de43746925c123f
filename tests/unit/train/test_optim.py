import pytest
import torch

from dist_lstm.config.schema import OptimConfig
from dist_lstm.train.optim import build_optimizer, build_schedule, lr_factor


def test_warmup_then_inverse_sqrt():
    assert lr_factor("inverse_sqrt", 0, 100, None, 0) == pytest.approx(0.01)
    assert lr_factor("inverse_sqrt", 99, 100, None, 0) == pytest.approx(1.0)
    assert lr_factor("inverse_sqrt", 400, 100, None, 0) == pytest.approx(0.5)


def test_cosine_reaches_floor_at_max_steps():
    assert lr_factor("cosine", 10, 10, 110, 0.1) == pytest.approx(1.0)
    assert lr_factor("cosine", 60, 10, 110, 0.1) == pytest.approx(0.55)
    assert lr_factor("cosine", 110, 10, 110, 0.1) == pytest.approx(0.1)


def test_constant_after_warmup():
    assert lr_factor("constant", 4, 10, None, 0) == pytest.approx(0.5)
    assert lr_factor("constant", 1000, 10, None, 0) == 1.0


def optim_cfg(**kw):
    """The schema's optim group with a quick plateau and no warm-up, then `kw`."""
    return OptimConfig(**{"lr": 0.1, "warmup_steps": 0, "plateau_patience": 0, **kw})


def test_plateau_halves_rate_when_metric_stalls():
    model = torch.nn.Linear(2, 2)
    cfg = optim_cfg(name="sgd", schedule="plateau")
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.SGD)
    schedule = build_schedule(opt, cfg, None, "max")
    opt.step()
    schedule.after_step()  # plateau ignores optimizer steps
    schedule.after_validation(10.0)
    schedule.after_validation(9.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_warmup_schedules_move_per_step_and_ignore_validations():
    model = torch.nn.Linear(2, 2)
    cfg = optim_cfg(name="sgd", schedule="constant", warmup_steps=4, lr=1.0)
    opt = build_optimizer(model, cfg)
    schedule = build_schedule(opt, cfg, None, "max")
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    schedule.after_validation(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    opt.step()
    schedule.after_step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    restored = build_schedule(build_optimizer(model, cfg), cfg, None, "max")
    restored.load_state_dict(schedule.state_dict())
    assert restored.state_dict()["last_epoch"] == 1
