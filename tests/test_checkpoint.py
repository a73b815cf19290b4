"""training/checkpoint.py (write side) and genrec/run_files.py (read side): periodic
and best checkpoints round-trip exactly, keep-N prunes, and load_model_for_inference
rebuilds the trained model from the workdir alone."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genrec.models import ModelConfig, build_model
from genrec.run_files import load_model_for_inference, read_catalogue
from genrec.vocab import SIDVocabulary
from training.checkpoint import Checkpointer, TrainingProgress, read_run_config, write_run_files
from training.config import CheckpointConfig, OptimizerConfig, TrainConfig, apply_overrides
from training.optim import make_optimizer

VOCAB = SIDVocabulary((4, 5, 6))
SID_CODES = np.array([[0, 1, 2], [3, 4, 5], [1, 0, 0], [1, 0, 1]], np.int32)
ITEM_IDS = np.array(["B0001", "B0002", "x", "42"])


def _model_config(**overrides):
    return ModelConfig.tiny(VOCAB.vocab_size, VOCAB.num_levels, num_encoder_layers=1, num_decoder_layers=1,
                            **overrides)


def _split(seed, model_config=None):
    model = build_model(model_config or _model_config(), rngs=nnx.Rngs(params=seed, dropout=seed))
    return nnx.split(model, nnx.Param, ...)


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture
def workdir(tmp_path):
    config = apply_overrides(TrainConfig(), ["model.preset=tiny", "loss.kind=apao_pointwise"])
    write_run_files(tmp_path, config, _model_config(), VOCAB, SID_CODES, ITEM_IDS)
    return tmp_path, config


def test_run_files_round_trip(workdir):
    path, config = workdir
    saved_config, saved_model_config = read_run_config(path)
    assert saved_config == config and saved_model_config == _model_config()
    codes, item_ids = read_catalogue(path)
    np.testing.assert_array_equal(codes, SID_CODES)
    assert item_ids.tolist() == ITEM_IDS.tolist()
    assert SIDVocabulary.load(path / "vocab.json") == VOCAB
    assert json.loads((path / "config.json").read_text())["model_config"]["dtype"] == "float32"
    assert not [p.name for p in path.iterdir() if p.name.startswith(".")], "no temp files left behind"


@pytest.mark.parametrize("async_save", [True, False])
def test_periodic_checkpoint_restores_exactly_and_keeps_n(workdir, async_save):
    path, _ = workdir
    optimizer, _ = make_optimizer(OptimizerConfig(warmup_fraction=0.0), total_steps=10)
    _, params, _ = _split(seed=1)
    opt_state = optimizer.init(params)
    # One real update so the moments are not zeros.
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
    _, opt_state = optimizer.update(grads, opt_state, params)
    checkpointer = Checkpointer(path, CheckpointConfig(keep=2, async_save=async_save))
    for step in (10, 20, 30):
        progress = TrainingProgress(step=step, data_step=step + 1, rng_key=(0, 42), best_metric=0.25,
                                    best_step=10, evals_without_improvement=2)
        checkpointer.save(params, opt_state, progress)
    checkpointer.wait()
    assert sorted(int(p.name) for p in (path / "checkpoints").iterdir() if p.name.isdigit()) == [20, 30]

    _, other_params, _ = _split(seed=2)  # a template with different values
    restored_params, restored_opt_state, restored = checkpointer.restore(other_params, optimizer.init(other_params))
    checkpointer.close()
    _assert_trees_equal(restored_params, params)
    _assert_trees_equal(restored_opt_state, opt_state)
    assert restored == progress
    assert type(restored_params) is type(params)


def test_load_model_for_inference_best_and_latest(workdir):
    path, _ = workdir
    graphdef, best_params, rest = _split(seed=3)
    _, latest_params, _ = _split(seed=4)
    optimizer, _ = make_optimizer(OptimizerConfig(), total_steps=10)
    checkpointer = Checkpointer(path, CheckpointConfig(async_save=True))
    with pytest.raises(FileNotFoundError, match="use which='latest'"):
        checkpointer.restore_params(best_params, "best")
    checkpointer.save_best(best_params, TrainingProgress(step=5, data_step=5, rng_key=(0, 1)), {"ndcg@10": 0.5})
    checkpointer.save(latest_params, optimizer.init(latest_params),
                      TrainingProgress(step=9, data_step=9, rng_key=(0, 1)))
    checkpointer.close()

    history = jnp.asarray([[0, 0, 2, 8, 13], [2, 10, 14, 5, 12]], jnp.int32)
    mask = history > 0
    candidates = jnp.asarray(VOCAB.codes_to_tokens(SID_CODES))[None].repeat(2, axis=0)  # [2, 4, 3]
    for which, params in (("best", best_params), ("latest", latest_params)):
        model, model_config, vocab, codes, item_ids = load_model_for_inference(path, which=which)
        assert model_config == _model_config() and vocab == VOCAB
        np.testing.assert_array_equal(codes, SID_CODES)
        assert item_ids.tolist() == ITEM_IDS.tolist()
        _assert_trees_equal(nnx.state(model, nnx.Param), params)
    # The rebuilt model computes what the saved one did.
    score = nnx.jit(lambda model: model(history, mask, candidates))
    np.testing.assert_array_equal(score(model), score(nnx.merge(graphdef, latest_params, rest)))

    with pytest.raises(ValueError, match="which='newest'"):
        load_model_for_inference(path, which="newest")
    with pytest.raises(FileNotFoundError, match="not a genrec training workdir"):
        load_model_for_inference(path / "elsewhere")


def test_inference_view_of_config_json_agrees_with_training(workdir):
    """genrec.run_files reads config.json as plain JSON: the same model, history length,
    evaluation settings, score normalisation and dataset as training's TrainConfig."""
    from dataclasses import asdict

    from genrec.run_files import load_run_data, read_run_info
    from training.config import score_normalization
    from training.train import load_data

    path, _ = workdir
    for loss_kind, expected in (("msl", "trie"), ("ce", "vocab")):
        config = apply_overrides(TrainConfig(), ["model.preset=tiny", f"loss.kind={loss_kind}", "data.max_history=7",
                                                 "data.synthetic.num_users=30", "data.synthetic.num_items=40"])
        write_run_files(path, config, _model_config(), VOCAB, SID_CODES, ITEM_IDS)
        run = read_run_info(path)
        assert run.model_config == _model_config() and run.max_history == 7
        assert run.score_normalization == score_normalization(config) == expected
        assert (run.num_beams, run.eval_batch_size, run.ks) == (config.eval.num_beams, config.eval.batch_size,
                                                                tuple(config.eval.ks))
        assert run.data == json.loads(json.dumps(asdict(config.data)))
        np.testing.assert_array_equal(load_run_data(run.data).sid_codes, load_data(config.data).sid_codes)

    # A config.json written before eval.score_normalization existed: "auto", so MSL runs decode over the trie.
    payload = json.loads((path / "config.json").read_text())
    payload["train_config"]["loss"]["kind"] = "msl"
    del payload["train_config"]["eval"]["score_normalization"]
    (path / "config.json").write_text(json.dumps(payload))
    assert read_run_info(path).score_normalization == "trie"
    # Run files without any checkpoint directory yet: a clear error, not an Orbax one.
    with pytest.raises(FileNotFoundError, match="use which='latest'"):
        load_model_for_inference(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_model_for_inference(path, which="latest")


def _read_meta(directory, step):
    """A checkpoint's ``meta`` JSON, read through Orbax's public API (not the code under test)."""
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=("meta",)) as manager:
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


@pytest.mark.parametrize("async_save", [True, False])
def test_checkpoints_record_a_checksum_of_every_array(workdir, async_save):
    from genrec.array_digest import tree_digest, tree_digests
    from genrec.checkpoint_checksums import verify_checksums

    path, _ = workdir
    optimizer, _ = make_optimizer(OptimizerConfig(), total_steps=10)
    _, params, _ = _split(seed=5)
    opt_state = optimizer.init(params)
    checkpointer = Checkpointer(path, CheckpointConfig(async_save=async_save))
    progress = TrainingProgress(step=3, data_step=3, rng_key=(0, 1))
    checkpointer.save(params, opt_state, progress)
    checkpointer.save_best(params, progress, {"ndcg@10": 0.5})
    checkpointer.close()

    pure = nnx.to_pure_dict(params)
    periodic = _read_meta(path / "checkpoints", 3)["checksums"]
    best = _read_meta(path / "best", 3)["checksums"]
    assert periodic["params"] == best["params"] == {"tree": tree_digest(pure), "arrays": tree_digests(pure)}
    assert periodic["opt_state"] == {"tree": tree_digest(opt_state), "arrays": tree_digests(opt_state)}
    assert len(periodic["params"]["arrays"]) == len(jax.tree.leaves(pure)) and set(best) == {"params"}

    # The record accepts the saved arrays and names the one array that changed by one ulp.
    assert verify_checksums(periodic, params=pure, opt_state=opt_state) is None
    name = sorted(periodic["params"]["arrays"])[3]
    changed = jax.tree_util.tree_map_with_path(
        lambda p, x: np.nextafter(x, np.inf) if "/".join(str(getattr(k, "key", k)) for k in p) == name else x, pure)
    assert verify_checksums(periodic, params=changed) == f"params/{name} checksum mismatch"
    # ... and the restore round trip passes its own verification.
    restored_params, restored_opt_state, restored = Checkpointer(path, CheckpointConfig()).restore(params, opt_state)
    _assert_trees_equal(restored_params, params)
    assert restored == progress


def test_a_checkpoint_saved_without_checksums_loads_with_one_warning(workdir, caplog):
    """Checkpoints written before checksums were recorded stay readable (unverified, said once per load)."""
    import logging

    import orbax.checkpoint as ocp

    path, _ = workdir
    _, params, _ = _split(seed=6)
    with ocp.CheckpointManager(path / "best", item_names=("params", "meta")) as manager:  # the old save_best
        manager.save(7, args=ocp.args.Composite(params=ocp.args.StandardSave(nnx.to_pure_dict(params)),
                                                meta=ocp.args.JsonSave({"progress": {}, "valid_metrics": {}})))
    with caplog.at_level(logging.WARNING):
        model, *_ = load_model_for_inference(path, "best")
    _assert_trees_equal(nnx.state(model, nnx.Param), params)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("genrec")]
    assert len(warnings) == 1 and "checkpoint step 7 has no checksums" in warnings[0], warnings
