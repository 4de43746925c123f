import random

import numpy as np
import pytest
import torch

from dist_lstm.data.sampler import BucketBatchSampler, token_budget_batches


def sizes(n=500, seed=0):
    rng = random.Random(seed)
    return [rng.randint(1, 40) for _ in range(n)]


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_example_exactly_once_per_epoch_within_budget():
    s = sizes()
    sampler = BucketBatchSampler(s, max_tokens=200, seed=3)
    for epoch in range(3):
        batches = epoch_batches(sampler, epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(s)))
        assert all(len(b) * max(s[i] for i in b) <= 200 for b in batches)
        assert len(batches) == len(sampler)


def test_batches_are_length_bucketed():
    s = sizes()
    batches = epoch_batches(BucketBatchSampler(s, max_tokens=200, seed=3), 0)
    spread = [max(s[i] for i in b) - min(s[i] for i in b) for b in batches]
    assert sum(spread) / len(spread) <= 2  # near-equal lengths inside a batch: little padding


def test_same_seed_same_batches_other_epoch_or_seed_differs():
    s = sizes()
    a = epoch_batches(BucketBatchSampler(s, 200, seed=3), 0)
    b = epoch_batches(BucketBatchSampler(s, 200, seed=3), 0)
    assert a == b
    assert a != epoch_batches(BucketBatchSampler(s, 200, seed=3), 1)
    assert a != epoch_batches(BucketBatchSampler(s, 200, seed=4), 0)


def test_global_rng_is_not_used():
    s = sizes()
    torch.manual_seed(0)
    a = epoch_batches(BucketBatchSampler(s, 200, seed=3), 0)
    torch.manual_seed(99)
    random.seed(99)
    assert a == epoch_batches(BucketBatchSampler(s, 200, seed=3), 0)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_distinct_batches_and_equal_counts(world_size):
    s = sizes(499)
    per_rank = [
        epoch_batches(BucketBatchSampler(s, 150, 3, r, world_size), 0) for r in range(world_size)
    ]
    counts = {len(b) for b in per_rank}
    assert len(counts) == 1
    single = epoch_batches(BucketBatchSampler(s, 150, 3), 0)
    covered = {i for batches in per_rank for b in batches for i in b}
    assert covered == set(range(len(s)))
    # Only the padding batches (repeats of the first ones) may appear twice.
    total = sum(len(b) for batches in per_rank for b in batches)
    assert len(per_rank[0]) == -(-len(single) // world_size)
    assert total >= len(s)


def test_state_dict_resumes_right_after_consumed_batches():
    s = sizes()
    full = epoch_batches(BucketBatchSampler(s, 200, seed=3), 2)
    sampler = BucketBatchSampler(s, 200, seed=3)
    sampler.set_epoch(2)
    it = iter(sampler)
    consumed = [next(it) for _ in range(5)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["consumed"] == 5
    resumed = BucketBatchSampler(s, 200, seed=3)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the trainer calls this at the top of the epoch; it must not rewind
    assert consumed + list(resumed) == full
    with pytest.raises(ValueError, match="seed"):
        BucketBatchSampler(s, 200, seed=4).load_state_dict(state)


def test_position_written_by_two_ranks_resumes_on_three_without_loss_or_repeat():
    """A checkpoint counts global batches, so another world size continues exactly."""
    s = sizes()
    full = epoch_batches(BucketBatchSampler(s, 200, seed=3), 1)
    two = [BucketBatchSampler(s, 200, seed=3, rank=r, world_size=2) for r in range(2)]
    seen = []
    for sampler in two:
        sampler.set_epoch(1)
        it = iter(sampler)
        seen.append([next(it) for _ in range(4)])
    state = two[0].state_dict()
    assert state == two[1].state_dict() and state["consumed"] == 8
    three = [BucketBatchSampler(s, 200, seed=3, rank=r, world_size=3) for r in range(3)]
    for sampler in three:
        sampler.load_state_dict(state)
        sampler.set_epoch(1)
    rest = [list(sampler) for sampler in three]
    assert len({len(r) for r in rest}) == 1  # same step count on every rank
    before = [b for pair in zip(*seen) for b in pair]
    after = [b for round_ in zip(*rest) for b in round_]
    tail = len(full) - len(before)
    assert before + after[:tail] == full  # nothing skipped, nothing repeated
    assert after[tail:] == full[: len(after) - tail]  # the last round's fill only


def test_item_over_budget_gets_its_own_batch():
    s = torch.tensor([3, 50, 4])
    assert token_budget_batches(s, torch.tensor([0, 2, 1]), 10).as_lists() == [[0, 2], [1]]


def test_plans_are_arrays_that_cut_as_the_greedy_rule_says():
    """Ascending sizes cut greedily: a batch grows while count x its largest size fits."""
    rng = random.Random(5)
    s = np.array(sorted(rng.randint(1, 60) for _ in range(2000)))
    plan = token_budget_batches(s, np.arange(len(s)), 300)
    expected, current = [], []
    for i, size in enumerate(s):
        if current and size * (len(current) + 1) > 300:
            expected.append(current)
            current = []
        current.append(i)
    expected.append(current)
    assert plan.as_lists() == expected
    assert plan.order.dtype == np.int32  # a few bytes per pair, not a Python int each


def test_reordered_plan_keeps_every_batch_whole():
    plan = token_budget_batches(np.array([1, 1, 2, 2, 2, 5]), np.arange(6), 4)
    assert plan.as_lists() == [[0, 1], [2, 3], [4], [5]]
    shuffled = plan.reordered(np.array([3, 1, 0, 2]))
    assert shuffled.as_lists() == [[5], [2, 3], [0, 1], [4]]


def test_weighted_corpora_repeat_and_subsample_pairs_per_epoch():
    s = sizes(30)
    shares = [(0, 10, 1.0), (10, 20, 2.0), (20, 30, 0.5)]
    sampler = BucketBatchSampler(s, 200, seed=3, shares=shares)
    seen, plans = [], []
    for epoch in range(2):
        plans.append(epoch_batches(sampler, epoch))
        counts = np.bincount([i for b in plans[-1] for i in b], minlength=30)
        assert (counts[:10] == 1).all() and (counts[10:20] == 2).all()
        assert sorted(counts[20:]) == [0] * 5 + [1] * 5  # half of the last corpus
        seen.append(set(np.flatnonzero(counts[20:])))
    assert seen[0] != seen[1]  # another half each epoch
    again = BucketBatchSampler(s, 200, seed=3, shares=shares)
    assert epoch_batches(again, 1) == plans[1]  # the same on every rank and after a resume


def test_one_corpus_of_weight_one_plans_as_without_shares():
    s = sizes(100)
    plain = epoch_batches(BucketBatchSampler(s, 200, seed=3), 0)
    shared = BucketBatchSampler(s, 200, seed=3, shares=[(0, 100, 1.0)])
    assert epoch_batches(shared, 0) == plain
