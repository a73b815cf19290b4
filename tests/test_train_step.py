"""training/train_step.py: the data-parallel step equals the single-device step, it
trains, it skips non-finite updates, MSL gets valid trie masks, and the mesh
rejects a batch that does not split over the devices."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genrec.batching import BatchIterator
from genrec.models import ModelConfig, build_model
from genrec.split import leave_one_out_split
from genrec.synthetic import make_synthetic_dataset
from training.apao import sample_negatives
from training.config import OptimizerConfig
from training.losses import LossConfig
from training.objective import training_objective
from training.optim import make_optimizer
from training.train_step import (
    RunningWeightsState,
    compute_loss,
    init_opt_state,
    make_catalogue,
    make_data_mesh,
    make_train_step,
    replicate,
    shard_batch,
)

BATCH = 32


@pytest.fixture(scope="module")
def setup():
    data = make_synthetic_dataset(num_items=150, num_users=80, codebook_size=8, seed=3)
    split = leave_one_out_split(data.sequences, max_history=8)
    batches = BatchIterator.from_split(split.train, data.sid_codes, data.vocab, BATCH, drop_remainder=False)
    model_config = ModelConfig.tiny(
        data.vocab.vocab_size, data.num_levels, dropout_rate=0.1, num_encoder_layers=1, num_decoder_layers=1
    )
    return data, batches, model_config


def _fresh_state(model_config, optimizer):
    graphdef, state = nnx.split(build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0)))
    return graphdef, state, optimizer.init(nnx.split_state(state, nnx.Param, ...)[0])


def _params(state):
    return jax.tree.map(np.asarray, nnx.split_state(state, nnx.Param, ...)[0])


def test_sharded_step_equals_single_device_step(setup):
    """Pairwise APAO with dropout: negatives and dropout masks must not depend on the layout."""
    assert len(jax.devices()) == 8
    data, batches, model_config = setup
    loss_config = LossConfig(kind="apao_pairwise", beta=0.3, neg_k=6)
    optimizer, _ = make_optimizer(OptimizerConfig(learning_rate=1e-2, warmup_fraction=0.0), total_steps=10)
    catalogue = make_catalogue(data.sid_codes, data.vocab, loss_config)
    batch = batches.batch_at(0)
    results = []
    for num_devices in (8, 1):
        mesh = make_data_mesh(BATCH, num_devices)
        graphdef, state, opt_state = _fresh_state(model_config, optimizer)
        step = make_train_step(loss_config, optimizer, mesh)
        sharded_batch = shard_batch(batch, mesh)
        assert len(sharded_batch["history_tokens"].sharding.device_set) == num_devices
        state, opt_state, metrics = step(
            graphdef, replicate(state, mesh), replicate(opt_state, mesh), sharded_batch,
            jax.random.key(7), replicate(catalogue, mesh),
        )
        results.append((_params(state), jax.device_get(metrics)))
    (params_8, metrics_8), (params_1, metrics_1) = results
    np.testing.assert_allclose(metrics_8["loss"], metrics_1["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics_8["prefix_auc"], metrics_1["prefix_auc"], rtol=1e-6)
    # Adam divides by sqrt(v), so float reassociation of tiny gradients can move
    # a parameter by ~1e-5 after one lr-1e-2 step.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-5), params_8, params_1)
    # The step changed the parameters (so the comparison above is not vacuous).
    _, initial_state, _ = _fresh_state(model_config, optimizer)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params_1, _params(initial_state))
    assert max(jax.tree.leaves(moved)) > 1e-3


@pytest.mark.parametrize("share_bos_position", [True, False])
def test_pairwise_loss_with_shared_bos_position_equals_loss_on_full_candidate_logits(setup, share_bos_position):
    """compute_loss decodes the BOS position once per example (or, with
    share_bos_position=False, every candidate in full); without dropout both
    must give the objective on every candidate's full teacher-forced logits."""
    data, batches, model_config = setup
    model_config = dataclasses.replace(model_config, dropout_rate=0.0)
    loss_config = LossConfig(kind="apao_pairwise", beta=0.3, eta=1e-3, neg_k=5, ce_tau=1.5,
                             share_bos_position=share_bos_position)
    catalogue = make_catalogue(data.sid_codes, data.vocab, loss_config)
    batch = {key: jnp.asarray(value) for key, value in batches.batch_at(1).items()}
    model = build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0))
    key = jax.random.key(3)
    # Jitted (eager NNX is slow); the comparison is the same.
    loss, aux = nnx.jit(compute_loss, static_argnums=4)(model, batch, catalogue, key, loss_config)

    neg_items = sample_negatives(key, catalogue.num_items, batch["target_items"], loss_config.neg_k)
    neg_tokens = jnp.take(catalogue.sid_tokens, neg_items, axis=0)
    candidates = jnp.concatenate([batch["target_tokens"][:, None], neg_tokens], axis=1)
    logits = nnx.jit(lambda m, *a: m(*a))(model, batch["history_tokens"], batch["history_mask"], candidates)
    expected, expected_aux = training_objective(
        logits[:, 0], batch["target_tokens"], config=loss_config, example_mask=batch["example_mask"],
        neg_logits=logits[:, 1:], neg_tokens=neg_tokens, num_distinct_prefixes=catalogue.num_distinct_prefixes,
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(aux["prefix_auc"], expected_aux["prefix_auc"], rtol=1e-5)
    assert float(loss) > float(aux["ce_loss"])  # the prefix term is really there


def test_unshared_pairwise_decoding_draws_dropout_per_candidate(setup):
    """share_bos_position=False decodes candidates with model(...): with dropout on,
    identical candidates must get different first-position logits (one mask each),
    which is the reference code's behaviour the option reproduces."""
    data, batches, model_config = setup  # dropout 0.1
    model = build_model(model_config, rngs=nnx.Rngs(params=0, dropout=1))
    batch = {key: jnp.asarray(value) for key, value in batches.batch_at(1).items()}
    same = jnp.repeat(batch["target_tokens"][:, None], 3, axis=1)  # [B, 3, L], three copies
    logits = nnx.jit(lambda m, *a: m(*a, deterministic=False))(
        model, batch["history_tokens"], batch["history_mask"], same)
    assert not np.allclose(logits[:, 0, 0], logits[:, 1, 0], atol=1e-4)
    # Without dropout the copies agree: the difference above is the masks, nothing else.
    logits = nnx.jit(lambda m, *a: m(*a))(model, batch["history_tokens"], batch["history_mask"], same)
    np.testing.assert_allclose(logits[:, 0, 0], logits[:, 1, 0], rtol=1e-5, atol=1e-5)


def test_step_trains_and_skips_nonfinite_updates(setup):
    data, batches, model_config = setup
    loss_config = LossConfig(kind="ce")
    optimizer, _ = make_optimizer(OptimizerConfig(learning_rate=3e-3, warmup_fraction=0.0), total_steps=100)
    catalogue = make_catalogue(data.sid_codes, data.vocab, loss_config)
    mesh = make_data_mesh(BATCH, 1)
    step = make_train_step(loss_config, optimizer, mesh, donate=False)
    # Without dropout the same batch gives the same loss surface at every step (and compiles faster).
    graphdef, state, opt_state = _fresh_state(dataclasses.replace(model_config, dropout_rate=0.0), optimizer)
    batch = shard_batch(batches.batch_at(0), mesh)

    losses = []
    for i in range(4):  # the same batch: the loss must go down
        state, opt_state, metrics = step(graphdef, state, opt_state, batch, jax.random.key(i), catalogue)
        losses.append(float(metrics["loss"]))
        assert not bool(metrics["update_skipped"])
    assert losses[-1] < losses[0] - 0.05

    # A NaN in the embedding table makes the loss and every gradient NaN: nothing may change.
    params, rest = nnx.split_state(state, nnx.Param, ...)
    table = params["embedding"]["table"]
    table[...] = table[...].at[3, 0].set(jnp.nan)
    poisoned = nnx.merge_state(params, rest)
    new_state, new_opt_state, metrics = step(graphdef, poisoned, opt_state, batch, jax.random.key(9), catalogue)
    assert bool(metrics["update_skipped"]) and not np.isfinite(float(metrics["loss"]))
    assert int(metrics["nonfinite_total"]) == 1 and int(metrics["nonfinite_consecutive"]) == 1
    jax.tree.map(np.testing.assert_array_equal, _params(new_state), _params(poisoned))
    for new, old in zip(jax.tree.leaves(new_opt_state.inner_state), jax.tree.leaves(opt_state.inner_state)):
        np.testing.assert_array_equal(new, old)


def test_running_weights_are_carried_by_the_step(setup):
    """loss.running_weights: the step uses the carried weights (uniform at first),
    updates them with this batch's prefix losses, and keeps them in its state."""
    data, batches, model_config = setup
    loss_config = LossConfig(kind="apao_pointwise", beta=0.3, eta=0.2, running_weights=True)
    optimizer, _ = make_optimizer(OptimizerConfig(learning_rate=1e-3, warmup_fraction=0.0), total_steps=10)
    catalogue = make_catalogue(data.sid_codes, data.vocab, loss_config)
    mesh = make_data_mesh(BATCH, 1)
    step = make_train_step(loss_config, optimizer, mesh, donate=False)
    graphdef, state = nnx.split(build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0)))
    opt_state = init_opt_state(optimizer, nnx.split_state(state, nnx.Param, ...)[0], loss_config, data.num_levels)
    assert isinstance(opt_state, RunningWeightsState)
    np.testing.assert_allclose(opt_state.prefix_weights, np.full(data.num_levels, 1 / data.num_levels))
    total = np.zeros(data.num_levels)
    for i in range(3):
        state, opt_state, metrics = step(graphdef, state, opt_state, shard_batch(batches.batch_at(i), mesh),
                                         jax.random.key(i), catalogue)
        total += np.asarray(metrics["prefix_losses"], np.float64)
        expected = np.exp(loss_config.eta * (total - total.max()))
        np.testing.assert_allclose(opt_state.prefix_weights, expected / expected.sum(), rtol=1e-5)
        np.testing.assert_allclose(metrics["prefix_weights"], opt_state.prefix_weights, rtol=1e-6)
    # The same step without the option recomputes weights from the batch alone (b / sum b, ~ b).
    plain = dataclasses.replace(loss_config, running_weights=False)
    graphdef, state = nnx.split(build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0)))
    plain_state = init_opt_state(optimizer, nnx.split_state(state, nnx.Param, ...)[0], plain, data.num_levels)
    _, _, metrics = make_train_step(plain, optimizer, mesh, donate=False)(
        graphdef, state, plain_state, shard_batch(batches.batch_at(0), mesh), jax.random.key(0), catalogue)
    b = np.asarray(metrics["prefix_losses"])
    np.testing.assert_allclose(metrics["prefix_weights"], b * np.exp(0.2 * b) / (b * np.exp(0.2 * b)).sum(),
                               rtol=1e-5)


def test_msl_masks_come_from_the_catalogue_trie(setup):
    data, batches, model_config = setup
    loss_config = LossConfig(kind="msl", msl_tau=1.0)
    catalogue = make_catalogue(data.sid_codes, data.vocab, loss_config)
    model = build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0))
    batch = {key: jnp.asarray(value) for key, value in batches.batch_at(1).items()}
    _, aux = jax.jit(compute_loss, static_argnums=4)(model, batch, catalogue, jax.random.key(0), loss_config)
    # Every target is a catalogue SID, so it lies inside its own trie mask ...
    assert float(aux["msl_target_outside_mask_fraction"]) == 0.0
    # ... and restricting the softmax to the valid children can only lower the loss.
    assert float(aux["msl_loss"]) < float(aux["ce_loss"])


def test_mesh_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="batch_size=30 does not split evenly over 8 devices.*batch_size=32"):
        make_data_mesh(30)
    with pytest.raises(ValueError, match="num_devices=9"):
        make_data_mesh(36, 9)
    assert make_data_mesh(24, 4).devices.shape == (4,)
