"""training/rl_step.py, one RL step at a time on the tiny smoke model (random weights):
data parallelism changes nothing, VED's rollouts are catalogue items within the
budget (checked against the catalogue itself), a GRPO step raises the
advantage-weighted probability of the rollouts it learned from, repeated
steps on one batch learn its targets, padded requests (``example_mask`` 0) do
not touch the update, and the V-STAR step runs on a decoder-only
(Llama-style) model too.

Compiles dominate (about 10-20 s of CPU per step program): each program is
built once per module (``_step`` keeps them by arm and device count), and the
V-STAR arm on 8 devices is exactly the program of tests/test_rl_loop.py's run
(the persistent cache of conftest.py serves it to whichever module runs second)."""

import dataclasses
import functools
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from flax import nnx
from train_cli import REPO, RL_TINY, SMOKE, TINY_RUN

from constrained.decode import build_eval_index
from constrained.ved import beam_search_budget
from genrec.batching import BatchIterator
from genrec.models import build_model
from genrec.split import leave_one_out_split
from training.config import load_config_file
from training.optim import make_optimizer
from training.rl_step import _rollouts, init_value_head, make_rl_step, rollout_budget
from training.train import load_data
from training.train_step import make_data_mesh, replicate, shard_batch

CONFIG = load_config_file(REPO / SMOKE, TINY_RUN + RL_TINY)
# The arms: "ved" is the run config's V-STAR default (all four losses); "grpo_sample" the GRPO
# term alone on sampled rollouts, prefix-credit rewards (so most requests carry a signal on a random
# model), a learning rate large enough to move the policy, and a second inner epoch whose metrics
# measure the first update (see test_grpo_step_raises_the_advantage_weighted_rollout_probabilities);
# its budget (VED's only) must not change what sampling is said to spend.
ARMS = {
    "ved": CONFIG.rl,
    "grpo_sample": dataclasses.replace(
        CONFIG.rl, rollouts="sample", reward="prefix_credit", sibling_weight=0.0, value_weight=0.0, kl_weight=0.0,
        inner_epochs=2, optimizer=dataclasses.replace(CONFIG.rl.optimizer, learning_rate=1e-3), budget=40),
    # V-STAR as the run config has it, at a learning rate that moves the tiny policy within 80 steps.
    "ved_fast": dataclasses.replace(CONFIG.rl, optimizer=dataclasses.replace(CONFIG.rl.optimizer, learning_rate=3e-3)),
}


@pytest.fixture(scope="module")
def tiny():
    """The smoke config's data, a randomly initialised model, the catalogue trie and one training batch."""
    data = load_data(CONFIG.data)
    vocab = data.vocab
    split = leave_one_out_split(data.sequences, CONFIG.data.max_history)
    model_config = CONFIG.model.build(vocab.vocab_size, vocab.num_levels, CONFIG.data.max_history)
    graphdef, params, rest = nnx.split(build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0)), nnx.Param, ...)
    index, _ = build_eval_index(data.sid_codes, vocab)
    batch = next(BatchIterator.from_split(split.train, data.sid_codes, vocab, CONFIG.rl.batch_size, shuffle=True,
                                          seed=CONFIG.seed, drop_remainder=True))
    assert batch["example_mask"].all()
    return SimpleNamespace(data=data, model_config=model_config, graphdef=graphdef, params=params, rest=rest,
                           index=index, batch=batch, key=jax.random.fold_in(jax.random.key(CONFIG.seed), 0))


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


# The one program tests/test_rl_loop.py's run also compiles (the persistent cache shares it); the
# others only this module runs, at XLA's backend optimisation level 0: half the compile time of the
# default, the same computation (the float tolerances below cover its rounding).
SHARED_PROGRAM = ("ved", 8)
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_programs = {}


def _start(tiny, arm: str, num_devices: int, batch=None, model=None):
    """``(step, args)``: the compiled RL step of ``arm`` and its arguments at the start,
    ``(trainable, opt_state, reference, rest, batch, key, index)``, as training/rl.py builds them; ``model``:
    another ``SimpleNamespace(name, model_config, graphdef, params, rest)`` than ``tiny``'s."""
    model = tiny if model is None else model
    rl = ARMS[arm]
    optimizer, _ = make_optimizer(rl.optimizer, rl.num_steps)
    mesh = make_data_mesh(rl.batch_size, num_devices)
    value_graphdef, value_params = init_value_head(model.model_config, rl, seed=CONFIG.seed)
    policy = jax.tree.map(lambda x: x.copy(), model.params)  # the step donates the policy's buffers
    trainable = {"policy": policy, "value": value_params}
    opt_state = optimizer.init(trainable)
    trainable, opt_state, reference, rest = replicate((trainable, opt_state, model.params, model.rest), mesh)
    args = (trainable, opt_state, reference, rest, shard_batch(tiny.batch if batch is None else batch, mesh),
            tiny.key, replicate(tiny.index.to_device(), mesh))
    step = make_rl_step(rl, optimizer, mesh)
    program = (getattr(model, "name", "tiny"), arm, num_devices)
    if program[1:] == SHARED_PROGRAM and model is tiny:
        return functools.partial(step, model.graphdef, value_graphdef), args
    if program not in _programs:
        _programs[program] = step.lower(model.graphdef, value_graphdef, *args).compile(FAST_COMPILE)
    return _programs[program], args


def _step(tiny, arm: str, num_devices: int, batch=None, model=None):
    """``(new trainable, metrics)`` (NumPy) of one RL step of ``arm`` from the start (see ``_start``)."""
    step, args = _start(tiny, arm, num_devices, batch, model)
    new, _, metrics = step(*args)
    return _host(new), _host(metrics)


@pytest.mark.parametrize("arm", ["grpo_sample", "ved"])
def test_data_parallel_step_equals_the_single_device_step(tiny, arm):
    """8 devices (1 request each) and 1 device: the same rollouts, update and metrics, up to float rounding."""
    one, one_metrics = _step(tiny, arm, 1)
    eight, eight_metrics = _step(tiny, arm, 8)
    # AdamW's first step is about lr * sign(gradient): a gradient entry near 0 turns rounding into up to
    # a step's difference, so the weights agree to 1% of a step (the gradients' norms to 1e-4 below).
    atol = max(1e-6, 0.01 * ARMS[arm].optimizer.learning_rate)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol), one, eight)
    assert one_metrics.keys() == eight_metrics.keys()
    for key in one_metrics:
        np.testing.assert_allclose(one_metrics[key], eight_metrics[key], rtol=1e-4, atol=1e-6, err_msg=key)
    # The step did something: the weights moved and the loss terms were computed on real rollouts.
    assert max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(one["policy"]),
                                                   jax.tree.leaves(_host(tiny.params)))) > 0
    assert one_metrics["rollouts_in_catalogue"] == 1.0 and np.isfinite(one_metrics["loss"])
    assert one_metrics["tokens_used"] <= rollout_budget(ARMS[arm], tiny.data.vocab.num_levels)


def test_ved_rollouts_are_catalogue_items_within_the_budget(tiny):
    """The step's own VED rollouts (same weights and key), checked against the catalogue: every valid
    one is an item, distinct within its request, empty slots are -1 (the tree holds fewer than G leaves
    for some request: the masking is exercised), and no request spends more than the budget."""
    rl = ARMS["ved"]
    value_graphdef, value_params = init_value_head(tiny.model_config, rl, seed=CONFIG.seed)

    def rollouts(params, value_params, rest, batch, key, index):
        model = nnx.merge(tiny.graphdef, params, rest)
        shared = model.encode(batch["history_tokens"], batch["history_mask"])
        return _rollouts(rl, model, nnx.merge(value_graphdef, value_params), shared, index, key,
                         batch["history_tokens"].shape[0])

    batch = {key: tiny.batch[key] for key in ("history_tokens", "history_mask")}
    args = (tiny.params, value_params, tiny.rest, batch, tiny.key, tiny.index.to_device())
    codes, valid, tokens_used = _host(jax.jit(rollouts).lower(*args).compile(FAST_COMPILE)(*args))
    num_requests, num_rollouts, num_levels = codes.shape
    assert (num_requests, num_rollouts) == (rl.batch_size, rl.num_rollouts)
    catalogue = {tuple(sid) for sid in tiny.data.sid_codes.tolist()}
    for b in range(num_requests):
        leaves = [tuple(sid) for sid in codes[b][valid[b]].tolist()]
        assert leaves and set(leaves) <= catalogue and len(set(leaves)) == len(leaves)
    assert (codes[~valid] == -1).all()
    assert (~valid).any()  # fewer leaves than G: invalid slots reach the losses
    assert (tokens_used >= 1).all() and (tokens_used <= rollout_budget(rl, num_levels)).all()

    # They are the step's rollouts: its metrics count the same valid slots and target hits.
    _, metrics = _step(tiny, "ved", 1)
    hits = (codes == tiny.batch["target_codes"][:, None]).all(-1) & valid
    assert metrics["valid_fraction"] == pytest.approx(valid.mean())
    assert metrics["hit_rate"] == pytest.approx(hits.sum() / valid.sum())
    assert metrics["tokens_used"] == pytest.approx(tokens_used.mean())
    assert metrics["rollouts_in_catalogue"] == 1.0 and np.isfinite(metrics["loss"])
    # One inner epoch: the loss reads the policy before its update, the reference itself, so both KLs are 0.
    assert metrics["kl"] == metrics["kl_exact"] and abs(metrics["kl_k3"]) < 1e-6 and abs(metrics["kl_exact"]) < 1e-6


def test_grpo_step_raises_the_advantage_weighted_rollout_probabilities(tiny):
    """GRPO alone, two inner epochs on the same rollouts: the second epoch's loss is the PPO surrogate
    ``-(1/N) sum_tokens min(rho A, clip(rho) A)`` with ``rho = pi_new / pi_old`` after the first update.
    Its advantages sum to 0 within a request, and the clip only lowers the surrogate, so a negative
    loss proves ``sum A (rho - 1) > 0``: the update made the rollouts with positive advantage more
    likely relative to those with negative advantage. AdamW's first step moves along the sign of the
    gradient of ``sum A log pi``, so to first order this must hold."""
    _, metrics = _step(tiny, "grpo_sample", 1)
    num_levels, num_rollouts = tiny.data.vocab.num_levels, ARMS["grpo_sample"].num_rollouts
    assert metrics["tokens_used"] == beam_search_budget(num_levels, num_rollouts) == 17  # not rl.budget = 40
    assert metrics["zero_signal_fraction"] < 1.0  # some request's rollouts differ in reward
    assert metrics["grpo_loss"] < -1e-4, metrics["grpo_loss"]
    assert metrics["ratio_mean"] != 1.0 and metrics["loss"] == pytest.approx(metrics["grpo_loss"])
    # After the first update the policy has left the reference: both KLs are logged, the exact one (the
    # default rl.kl_estimator) is the one reported and penalised.
    assert metrics["kl"] == metrics["kl_exact"] > 0 and metrics["kl_k3"] > 0


def test_padded_requests_do_not_change_the_update(tiny):
    """Requests with ``example_mask`` 0 (a padded last batch) add nothing: replacing their
    histories and targets leaves the new weights exactly as they were."""
    half = CONFIG.rl.batch_size // 2
    masked = dict(tiny.batch, example_mask=np.arange(CONFIG.rl.batch_size) < half)
    changed = dict(masked)
    for key in ("history_tokens", "history_mask", "target_codes", "target_tokens", "target_items"):
        changed[key] = np.concatenate([tiny.batch[key][:half], tiny.batch[key][:half][::-1]])
    first, first_metrics = _step(tiny, "grpo_sample", 1, masked)
    second, second_metrics = _step(tiny, "grpo_sample", 1, changed)
    jax.tree.map(np.testing.assert_array_equal, first, second)
    for key in ("loss", "grpo_loss", "reward_mean", "hit_rate", "zero_signal_fraction", "valid_fraction"):
        assert first_metrics[key] == second_metrics[key], key
    assert first_metrics["valid_fraction"] <= 0.5


def test_vstar_step_on_a_decoder_only_model(tiny):
    """The V-STAR step (cached VED, value head at the prefix positions) on a tiny Llama-style model: every
    rollout a catalogue item within the budget, a finite loss, and the policy and the value head both move."""
    model_spec = dataclasses.replace(CONFIG.model, arch="decoder_only", num_encoder_layers=0, num_decoder_layers=2)
    vocab = tiny.data.vocab
    model_config = model_spec.build(vocab.vocab_size, vocab.num_levels, CONFIG.data.max_history)
    assert model_config.arch == "decoder_only"
    graphdef, params, rest = nnx.split(build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0)), nnx.Param, ...)
    llama = SimpleNamespace(name="decoder_only", model_config=model_config, graphdef=graphdef, params=params,
                            rest=rest)
    before = _host({"policy": params, "value": init_value_head(model_config, ARMS["ved"], seed=CONFIG.seed)[1]})
    new, metrics = _step(tiny, "ved", 1, model=llama)
    assert metrics["rollouts_in_catalogue"] == 1.0 and metrics["valid_fraction"] > 0
    assert 1 <= metrics["tokens_used"] <= rollout_budget(ARMS["ved"], vocab.num_levels)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["value_loss"])
    for part in ("policy", "value"):
        assert max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(before[part]), jax.tree.leaves(new[part]))) > 0


@pytest.mark.parametrize(("arm", "gain_needed", "level_needed"), [("grpo_sample", 2.0, 4.0), ("ved_fast", 0.2, 0.5)])
def test_repeated_steps_on_one_batch_learn_its_targets(tiny, arm, gain_needed, level_needed):
    """The whole loop points the right way: 80 steps on the same 8 requests (fresh rollouts each step)
    make the rollouts find the targets far more often, as a sign or wiring error in rewards, advantages,
    losses or the update would prevent. Hits per request, mean of the first 10 steps -> the last 10, over
    six other random keys: sampled GRPO 0.1-0.3 -> 5.6-7.6 of its 8 rollouts (needed: a gain of 2 and at
    least 4); V-STAR 0.15-0.38 -> 0.61-0.75, where a request's 8 distinct VED rollouts hit at most once, so
    that is the share of requests whose rollouts hold the target (needed: a gain of 0.2 and at least half)."""
    step, (trainable, opt_state, reference, rest, batch, key, index) = _start(tiny, arm, 1)
    hits_per_request = []
    for i in range(80):
        trainable, opt_state, metrics = step(trainable, opt_state, reference, rest, batch, jax.random.fold_in(key, i),
                                             index)
        metrics = _host(metrics)
        assert metrics["rollouts_in_catalogue"] == 1.0 and np.isfinite(metrics["loss"])
        hits_per_request.append(metrics["hit_rate"] * metrics["valid_fraction"] * ARMS[arm].num_rollouts)
    first, last = np.mean(hits_per_request[:10]), np.mean(hits_per_request[-10:])
    assert last >= first + gain_needed and last >= level_needed, (first, last)
