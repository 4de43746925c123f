"""Best tracking, early stopping and the per-step vote across ranks, built from fakes."""

import signal

from dist_lstm.train.stopping import BestTracker, StepVote, TrainingLimits


def test_best_tracker_follows_the_metric_direction_and_counts_stale_validations():
    bleu = BestTracker("val_bleu", patience=2)
    assert [bleu.update(v, s) for s, v in enumerate([10.0, 12.0, 11.0, 12.0])] == [
        True,
        True,
        False,
        False,  # equal is not better
    ]
    assert (bleu.best, bleu.best_step, bleu.stale) == (12.0, 1, 2)
    assert "did not improve for 2 validations" in bleu.stop_reason()
    loss = BestTracker("val_loss")
    assert loss.update(3.0, 1) and loss.update(2.0, 2) and not loss.update(2.5, 3)
    assert loss.stop_reason() is None  # patience 0: never stops early


def test_best_tracker_state_round_trips():
    tracker = BestTracker("val_bleu", patience=3)
    tracker.update(5.0, 10)
    tracker.update(4.0, 20)
    restored = BestTracker("val_bleu", patience=3)
    restored.load_state_dict(tracker.state_dict())
    assert (restored.best, restored.best_step, restored.stale) == (5.0, 10, 1)


def fake_ranks(*others):
    """host_sum of this rank's values plus the other ranks' (given as lists)."""
    return lambda mine: [sum(column) for column in zip(mine, *others)]


def test_a_signal_on_another_rank_stops_this_one_at_the_same_step():
    vote = StepVote(fake_ranks([1.0, float(signal.SIGUSR1), 0.0, 0.0]), is_main=True)
    result = vote.poll(None, save_due_here=False)
    assert result.stop_signal == signal.SIGUSR1
    assert result.stop_reason == "stopped by SIGUSR1"
    assert not result.save_due


def test_a_rank_keeps_its_own_signal_and_only_rank_0_clock_counts():
    vote = StepVote(fake_ranks([1.0, float(signal.SIGTERM), 0.0, 0.0]), is_main=False)
    result = vote.poll(signal.SIGINT, save_due_here=True)  # not rank 0: its clock is ignored
    assert result.stop_signal == signal.SIGINT and not result.save_due
    main = StepVote(fake_ranks([0.0, 0.0, 0.0, 0.0]), is_main=True)
    assert main.poll(None, save_due_here=True).save_due
    assert main.poll(None, save_due_here=False).stop_signal is None


def test_max_time_is_judged_by_rank_0_clock_alone():
    """Ranks whose own clocks disagree near trainer.max_time still leave at one step."""
    late_rank = StepVote(fake_ranks([0.0, 0.0, 0.0, 0.0]), is_main=False)
    assert not late_rank.poll(None, save_due_here=False, time_up_here=True).time_up
    rank_0_says_so = [0.0, 0.0, 0.0, 1.0]
    follower = StepVote(fake_ranks(rank_0_says_so), is_main=False)
    assert follower.poll(None, save_due_here=False, time_up_here=False).time_up
    main = StepVote(fake_ranks([0.0, 0.0, 0.0, 0.0]), is_main=True)
    assert main.poll(None, save_due_here=False, time_up_here=True).time_up


def test_limits_end_on_the_common_time_verdict_not_a_clock():
    limits = TrainingLimits(max_steps=None, max_epochs=None, max_time="00:00:30")
    assert limits.time_is_up(30.0) and not limits.time_is_up(29.9)
    assert limits.reached(5, 0, time_up=True, end_of_epoch=False) == (
        "reached trainer.max_time=00:00:30"
    )
    assert limits.reached(5, 0, time_up=False, end_of_epoch=True) is None
    assert not TrainingLimits(None, None, None).time_is_up(1e9)
