"""The one jitted RL step: rollouts -> rewards -> GRPO / Sibling-GRPO / value / KL update.

Where it sits: supervised checkpoint -> **RL step** -> RL loop (training/rl.py).
Everything of a step is one XLA program: the histories are encoded once, the
``G`` rollouts of each request are drawn on the device through the catalogue
trie (``"beam"``: ``constrained.sampling.beam_rollouts``; ``"sample"``:
``constrained_sample``; ``"ved"``: ``constrained.ved.value_guided_decode``
with the value head and a KV cache over its tree), the frozen supervised model's log-probs of the rollouts
are computed in the same program (the KL anchor), and the policy and the value
head are updated on ``training.rl_losses.rl_objective``. docs/rl.md holds the
contracts; log-probs are under the trie-restricted policy.

Data parallelism as in training/train_step.py: the batch of requests is
sharded over the mesh's ``"data"`` axis, parameters are replicated, XLA
inserts the gradient all-reduce. Randomness: the step's key (``fold_in(seed
key, step)``) draws the rollouts, so a resumed run draws what the
uninterrupted one would have.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from constrained.index import DeviceIndex
from constrained.sampling import beam_rollouts, constrained_sample, restricted_kl, token_log_probs_of
from constrained.ved import beam_search_budget, default_init_beam_width, value_guided_decode, ved_uniforms
from genrec.models import ModelConfig
from genrec.models.config import BOS_ID
from genrec.models.value_head import (
    ValueHead,
    codes_to_input_tokens,
    make_cached_node_fn,
    prefix_values_and_logits,
)
from training.config import RLConfig
from training.optim import nonfinite_counts
from training.rl_losses import RLLossConfig, rl_objective

__all__ = ["init_value_head", "make_rl_step", "rl_loss_config", "rollout_budget", "uses_value_head",
           "ved_iterations"]


def rl_loss_config(rl: RLConfig) -> RLLossConfig:
    """The loss settings of an :class:`RLConfig`."""
    return RLLossConfig(grpo_weight=rl.grpo_weight, sibling_weight=rl.sibling_weight, value_weight=rl.value_weight,
                        kl_weight=rl.kl_weight, clip_eps=rl.clip_eps, gamma=rl.gamma, reward_kind=rl.reward,
                        level_weights=rl.level_weights, kl_estimator=rl.kl_estimator)


def uses_value_head(rl: RLConfig) -> bool:
    """The value head is evaluated when it is trained (``value_weight > 0``) or guides VED."""
    return rl.value_weight > 0 or rl.rollouts == "ved"


def rollout_budget(rl: RLConfig, num_levels: int) -> int:
    """Forward tokens per request of every arm: ``rl.budget``, else one width-``G`` beam search (docs/rl.md)."""
    return rl.budget or beam_search_budget(num_levels, rl.num_rollouts)


def ved_iterations(rl: RLConfig, num_levels: int) -> tuple[int, int]:
    """``(init_beam_width, iterations)`` of VED: enough iterations of ``ved_nodes_per_iteration`` nodes
    to spend the budget left after the initial beam (``1 + (L - 1) * width`` tokens, as a beam search)."""
    budget = rollout_budget(rl, num_levels)
    width = rl.ved_init_beam_width
    if beam_search_budget(num_levels, width) > budget:  # the initial beam must leave room in the budget
        width = default_init_beam_width(num_levels, rl.num_rollouts, budget)
    left = budget - beam_search_budget(num_levels, width)
    return width, max(1, math.ceil(left / rl.ved_nodes_per_iteration))


def init_value_head(model_config: ModelConfig, rl: RLConfig, *, seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    """A fresh :class:`ValueHead` for the model's hidden states: ``(graphdef, params)``."""
    head = ValueHead(model_config, value_grad_to_trunk=rl.value_grad_to_trunk, rngs=nnx.Rngs(params=seed + 1))
    return nnx.split(head)


def _policy_log_probs(model, shared, index: DeviceIndex, sid_codes: jax.Array, head=None):
    """``(token log-probs float32[B, G, L], values float32[B, G, L + 1] or None, logits)`` of the rollouts;
    ``logits = (first [B, V], rest [B, G, L - 1, V])``, the layout of ``token_log_probs_of``."""
    offsets = index.meta.token_offsets
    if head is not None:
        logits, values = prefix_values_and_logits(model, head, shared, sid_codes, offsets)
    else:
        logits = model.decode_hidden(shared, codes_to_input_tokens(sid_codes, offsets))[0][:, :, :-1]
        values = None
    first, rest = logits[:, 0, 0], logits[:, :, 1:]
    return token_log_probs_of(index, first, rest, sid_codes, "trie"), values, (first, rest)


def _rollouts(rl: RLConfig, model, head, shared, index: DeviceIndex, key: jax.Array, batch: int):
    """``(sid_codes int32[B, G, L], valid bool[B, G], tokens_used float32[B])`` of the step's rollouts."""
    num_levels = index.meta.num_levels
    G = rl.num_rollouts
    # Beam search and sampling decode G paths from one root whatever ``rl.budget`` says: 1 + (L - 1) * G tokens.
    fixed_cost = jnp.full((batch,), float(beam_search_budget(num_levels, G)))
    if rl.rollouts == "beam":
        out = beam_rollouts(index, model.decode_step, shared, model.init_beam_cache(shared, G),
                            num_rollouts=G, start_token=BOS_ID, normalization="trie")
        return out.sid_codes, out.valid, fixed_cost
    if rl.rollouts == "sample":
        out = constrained_sample(index, model.decode_step, shared, model.init_beam_cache(shared, G), key,
                                 num_samples=G, start_token=BOS_ID, temperature=rl.temperature, top_k=rl.top_k,
                                 top_p=rl.top_p, normalization="trie")
        return out.sid_codes, out.valid, fixed_cost
    width, iterations = ved_iterations(rl, num_levels)
    uniforms = ved_uniforms(key, num_iterations=iterations, num_requests=batch,
                            nodes_per_iteration=rl.ved_nodes_per_iteration)
    # KV-cached node evaluation (constrained/ved.py, "Cached evaluation"): one decoder position per node.
    out = value_guided_decode(index, make_cached_node_fn(model, head, shared, index.meta.token_offsets), uniforms,
                              num_outputs=G, budget=rollout_budget(rl, num_levels), init_beam_width=width,
                              lam=rl.ved_lambda, beta=rl.ved_beta, cached=True)
    return out.sid_codes, out.valid, out.tokens_used.astype(jnp.float32)


def _rl_step(
    graphdef: nnx.GraphDef,
    value_graphdef: nnx.GraphDef,
    trainable: dict[str, nnx.State],
    opt_state: Any,
    reference_params: nnx.State,
    rest: nnx.State,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    index: DeviceIndex,
    *,
    rl: RLConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[dict[str, nnx.State], Any, dict[str, jax.Array]]:
    history_tokens, history_mask = batch["history_tokens"], batch["history_mask"]
    target_codes = batch["target_codes"]
    real = batch["example_mask"].astype(bool)
    num_requests = history_tokens.shape[0]
    with_values = uses_value_head(rl)
    loss_config = rl_loss_config(rl)

    # 1. Rollouts under the current policy (no gradient), every one a catalogue SID.
    model = nnx.merge(graphdef, trainable["policy"], rest)
    head = nnx.merge(value_graphdef, trainable["value"]) if with_values else None
    shared = model.encode(history_tokens, history_mask)
    sid_codes, valid, tokens_used = jax.lax.stop_gradient(
        _rollouts(rl, model, head, shared, index, rng, num_requests))
    valid = valid & real[:, None]

    # 2. The frozen supervised model's log-probs and logits (the KL anchor), and the rollout policy's.
    reference = nnx.merge(graphdef, reference_params, rest)
    logp_ref, _, ref_logits = jax.lax.stop_gradient(
        _policy_log_probs(reference, reference.encode(history_tokens, history_mask), index, sid_codes))
    logp_old = None
    if rl.inner_epochs > 1:
        logp_old = jax.lax.stop_gradient(_policy_log_probs(model, shared, index, sid_codes)[0])

    def loss_fn(params: dict[str, nnx.State]):
        policy = nnx.merge(graphdef, params["policy"], rest)
        value_head = nnx.merge(value_graphdef, params["value"]) if with_values else None
        logp, values, logits = _policy_log_probs(policy, policy.encode(history_tokens, history_mask), index,
                                                 sid_codes, value_head)
        if values is None:
            values = jnp.zeros(sid_codes.shape[:2] + (sid_codes.shape[2] + 1,), jnp.float32)
        prefix_kl = restricted_kl(index, *logits, *ref_logits, sid_codes)  # both KLs are logged
        loss, metrics = rl_objective(logp, logp_old, logp_ref, values, sid_codes, target_codes, valid,
                                     config=loss_config, prefix_kl=prefix_kl)
        in_catalogue = jnp.all(jnp.isfinite(logp), axis=-1) | ~valid
        metrics["rollouts_in_catalogue"] = jnp.mean(in_catalogue.astype(jnp.float32))
        return loss, metrics

    for _ in range(rl.inner_epochs):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
    metrics = {
        **metrics,
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "update_skipped": ~opt_state.last_finite,
        "tokens_used": jnp.mean(tokens_used),
        **nonfinite_counts(opt_state),
    }
    return trainable, opt_state, metrics


def make_rl_step(rl: RLConfig, optimizer: optax.GradientTransformation, mesh: Mesh, *, donate: bool = True):
    """The jitted ``step(graphdef, value_graphdef, trainable, opt_state, reference_params, rest, batch, rng, index)
    -> (trainable, opt_state, metrics)``.

    ``trainable = {"policy": nnx.Param state of the recommender, "value": the ValueHead's state}``;
    ``opt_state = optimizer.init(trainable)`` (``training.optim.make_optimizer``); ``reference_params``
    the frozen supervised parameters; ``rest`` the recommender's non-parameter state; ``batch`` from
    ``training.train_step.shard_batch``; ``index`` the catalogue trie (``constrained.decode.build_eval_index``,
    on the device); ``rng`` the step's key. ``metrics`` holds ``rl_objective``'s, plus ``loss``,
    ``grad_norm``, ``update_skipped``, ``tokens_used`` (forward tokens per request), the non-finite
    counters and ``rollouts_in_catalogue`` (must be 1).
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    step = functools.partial(_rl_step, rl=rl, optimizer=optimizer)
    return jax.jit(step, static_argnums=(0, 1), donate_argnums=(2, 3) if donate else (),
                   out_shardings=(replicated, replicated, replicated))

