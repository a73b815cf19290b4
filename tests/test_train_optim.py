"""training/optim.py: the learning-rate schedule's shape, where weight decay applies,
and that a non-finite gradient leaves parameters and moments untouched."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.config import OptimizerConfig
from training.optim import make_optimizer, make_schedule, nonfinite_counts, warmup_steps

PEAK = 5e-4


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_warmup_then_decay(kind):
    config = OptimizerConfig(learning_rate=PEAK, warmup_fraction=0.1, schedule=kind, end_learning_rate=0.0)
    total = 1000
    schedule = make_schedule(config, total)
    assert warmup_steps(config, total) == 100
    lr = np.array([float(schedule(s)) for s in range(total + 1)])
    assert lr[0] == 0.0
    np.testing.assert_allclose(lr[50], PEAK / 2, rtol=1e-6)  # linear warmup
    np.testing.assert_allclose(lr[100], PEAK, rtol=1e-6)
    assert np.all(np.diff(lr[:101]) > 0) and np.all(np.diff(lr[100:]) <= 1e-12)
    progress = 0.25  # a quarter into the decay
    expected = PEAK * (0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1 - progress)
    np.testing.assert_allclose(lr[100 + int(progress * 900)], expected, rtol=1e-5)
    np.testing.assert_allclose(lr[total], 0.0, atol=1e-12)


def test_constant_schedule_and_no_warmup():
    schedule = make_schedule(OptimizerConfig(learning_rate=PEAK, warmup_fraction=0.0, schedule="constant"), 10)
    assert [float(schedule(s)) for s in (0, 5, 10)] == pytest.approx([PEAK] * 3)


def _params():
    return {"kernel": jnp.ones((3, 4)), "embedding": jnp.ones((5, 2)), "norm_scale": jnp.ones((4,))}


def test_weight_decay_only_on_matrices():
    config = OptimizerConfig(learning_rate=0.1, weight_decay=0.5, warmup_fraction=0.0, schedule="constant")
    optimizer, _ = make_optimizer(config, total_steps=10)
    params = _params()
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
    # Zero gradient: the only update is decoupled decay, -lr * wd * param.
    np.testing.assert_allclose(updates["kernel"], -0.05, rtol=1e-6)
    np.testing.assert_allclose(updates["embedding"], -0.05, rtol=1e-6)
    np.testing.assert_array_equal(updates["norm_scale"], 0.0)


def test_nonfinite_gradient_is_skipped_and_counted():
    config = OptimizerConfig(learning_rate=0.1, warmup_fraction=0.0, schedule="constant")
    optimizer, _ = make_optimizer(config, total_steps=10)
    params = _params()
    state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    bad_grads = {**grads, "kernel": grads["kernel"].at[0, 0].set(jnp.nan)}

    updates, bad_state = optimizer.update(bad_grads, state, params)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
    counts = nonfinite_counts(bad_state)
    assert int(counts["nonfinite_total"]) == 1 and int(counts["nonfinite_consecutive"]) == 1
    # Moments are untouched: the next finite step equals a first step from scratch.
    good_updates, good_state = optimizer.update(grads, bad_state, params)
    fresh_updates, _ = optimizer.update(grads, state, params)
    jax.tree.map(np.testing.assert_array_equal, good_updates, fresh_updates)
    assert int(nonfinite_counts(good_state)["nonfinite_total"]) == 1
    assert int(nonfinite_counts(good_state)["nonfinite_consecutive"]) == 0


def test_gradient_clipping_bounds_the_first_moment():
    config = OptimizerConfig(learning_rate=0.1, warmup_fraction=0.0, schedule="constant", grad_clip_norm=1.0)
    optimizer, _ = make_optimizer(config, total_steps=10)
    params = _params()
    huge = jax.tree.map(lambda p: 1e3 * jnp.ones_like(p), params)
    _, state = optimizer.update(huge, optimizer.init(params), params)
    first_moments = state.inner_state[1][0].mu  # clip -> adamw(scale_by_adam, ...)
    # mu = (1 - b1) * clipped gradient, and the clipped gradient has global norm 1.
    norm = float(jnp.sqrt(sum(jnp.sum(m**2) for m in jax.tree.leaves(first_moments))))
    np.testing.assert_allclose(norm, (1 - config.b1) * 1.0, rtol=1e-5)
