"""The optimizer: AdamW, warmup + decay schedule, clipping, skipping of non-finite steps.

Where it sits: ``TrainConfig.optimizer`` -> :func:`make_optimizer` -> the
``optax`` transformation the train step (training/train_step.py) applies to the
model's ``nnx.Param`` state. Parameters and optimizer moments are float32
whatever the model's compute dtype (``ModelSpec.dtype``).

The chain, in order:

1. ``clip_by_global_norm(grad_clip_norm)``;
2. AdamW (decoupled weight decay, applied to parameters with ``ndim >= 2``:
   matrices and embeddings, not norm scales);
3. learning rate: linear warmup from 0 over ``round(warmup_fraction * total_steps)``
   steps, then cosine or linear decay to ``end_learning_rate`` at ``total_steps``
   (Hugging Face's ``get_cosine_schedule_with_warmup`` shape), or constant;
4. the whole update wrapped in ``optax.apply_if_finite``: a step whose gradient
   holds a NaN/inf leaves parameters and moments untouched, is counted in the
   state (:func:`nonfinite_counts`), and does not advance the schedule.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from training.config import OptimizerConfig

__all__ = ["make_optimizer", "make_schedule", "nonfinite_counts", "warmup_steps"]

# apply_if_finite would apply a non-finite update after this many in a row; the
# train loop stops long before (OptimizerConfig.max_consecutive_nonfinite).
_NEVER_APPLY_NONFINITE = 2**30


def warmup_steps(config: OptimizerConfig, total_steps: int) -> int:
    """Number of warmup steps: ``round(warmup_fraction * total_steps)``."""
    return int(round(config.warmup_fraction * total_steps))


def make_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer step (0-based).

    Linear from 0 at step 0 to ``learning_rate`` at ``warmup_steps``, then
    ``schedule`` down to ``end_learning_rate`` at ``total_steps``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = warmup_steps(config, total_steps)
    peak = config.learning_rate
    decay_steps = max(total_steps - warmup, 1)
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_learning_rate / peak)
    elif config.schedule == "linear":
        decay = optax.linear_schedule(peak, config.end_learning_rate, decay_steps)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"optimizer.schedule={config.schedule!r}; use 'cosine', 'linear' or 'constant'")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: matrices and embeddings."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(config: OptimizerConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer chain of the module docstring, and its learning-rate schedule.

    ``update(grads, opt_state, params)`` needs ``params`` (weight decay).
    """
    schedule = make_schedule(config, total_steps)
    adamw = optax.adamw(
        schedule, b1=config.b1, b2=config.b2, eps=config.eps,
        weight_decay=config.weight_decay, mask=_decay_mask,
    )
    chain = [adamw] if config.grad_clip_norm is None else [optax.clip_by_global_norm(config.grad_clip_norm), adamw]
    optimizer = optax.apply_if_finite(optax.chain(*chain), max_consecutive_errors=_NEVER_APPLY_NONFINITE)
    return optimizer, schedule


def nonfinite_counts(opt_state: Any) -> dict[str, jax.Array]:
    """``{"nonfinite_total", "nonfinite_consecutive"}``: skipped steps in all / in a row."""
    return {
        "nonfinite_total": opt_state.total_notfinite,
        "nonfinite_consecutive": opt_state.notfinite_count,
    }
