"""research/prefix_weights.py: APAO pointwise has the gradient of level-weighted
token CE with pointwise_token_weights' coefficients (docs/losses.md, "Pointwise
APAO is level-weighted CE"), checked against the product's training objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from research_scripts import load_script

from training.losses import LossConfig, token_log_probs
from training.objective import training_objective

pointwise_token_weights = load_script("prefix_weights").pointwise_token_weights

BATCH, SID_LEN, VOCAB = 6, 4, 9
EXAMPLE_MASK = np.array([True, True, False, True, False, True])


def logits_and_targets():
    """Positive logits ``[batch, T, V]`` and targets ``[batch, T]`` over a small codebook."""
    logits = np.random.default_rng(11).normal(0.0, 2.0, (BATCH, SID_LEN, VOCAB)).astype(np.float32)
    targets = np.random.default_rng(13).integers(0, 3, (BATCH, SID_LEN)).astype(np.int32)
    return logits, targets


@pytest.mark.parametrize("config", [
    LossConfig(kind="apao_pointwise", beta=0.3, eta=1e-4),
    LossConfig(kind="apao_pointwise", beta=0.7, eta=2.0, prefix_tau=0.5, ce_tau=1.5, num_prefixes=3),
    LossConfig(kind="apao_pointwise", beta=0.4, eta=0.5, use_ce=False),
    LossConfig(kind="apao_pointwise", beta=0.2, eta=3.0, running_weights=True),
], ids=["paper", "tau-P3", "no-ce", "running"])
def test_pointwise_objective_has_the_gradient_of_level_weighted_ce(config):
    # With the step's weights, grad(total) == grad(-sum_j c_j mean_b l_bj), c = pointwise_token_weights(...).
    logits, targets = logits_and_targets()
    mask, targets = jnp.asarray(EXAMPLE_MASK), jnp.asarray(targets)
    prior = jnp.asarray([0.4, 0.3, 0.2, 0.1][: config.num_prefixes or SID_LEN])
    prior = prior / prior.sum()

    def total(pos_logits):
        return training_objective(pos_logits, targets, config=config, example_mask=mask,
                                  prior_prefix_weights=prior)

    (_, aux), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(logits))
    coefficients = pointwise_token_weights(np.asarray(aux["prefix_weights"]), sid_length=SID_LEN,
                                           beta=config.beta, prefix_tau=config.prefix_tau, use_ce=config.use_ce)
    assert coefficients.shape == (SID_LEN,)

    def level_weighted_ce(pos_logits):
        l = token_log_probs(pos_logits, targets, config.ce_tau)  # [batch, T]
        per_level = (jnp.where(mask[:, None], -l, 0.0)).sum(axis=0) / mask.sum()
        return (jnp.asarray(coefficients, jnp.float32) * per_level).sum()

    np.testing.assert_allclose(grad, jax.grad(level_weighted_ce)(jnp.asarray(logits)), rtol=2e-4, atol=1e-7)


def test_pointwise_token_weights_by_hand_and_bad_lengths():
    # By hand for P = T = 4, beta 1, tau 1, with CE: c_4 = 1/4 + w_4/4, c_1 = 1/4 + w_1 + w_2/2 + w_3/3 + w_4/4.
    w = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(pointwise_token_weights(w, sid_length=4, beta=1.0),
                               [0.25 + 0.1 + 0.1 + 0.1 + 0.1, 0.25 + 0.1 + 0.1 + 0.1, 0.25 + 0.1 + 0.1, 0.25 + 0.1])
    with pytest.raises(ValueError, match="prefix weights"):
        pointwise_token_weights(np.ones(5) / 5, sid_length=4, beta=1.0)
