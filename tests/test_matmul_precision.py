"""The decode's float32 matmul precision (issue 23): ``matmul_precision`` on the Recommender, evaluation, the batch
job and the Beam handler, and ``--matmul-precision`` on ``genrec recommend`` and ``genrec eval``.

On a CPU every precision computes full float32, so "highest" and "default" must give the same items and scores
there: these tests check the plumbing (the option is validated, reaches the jitted decode as the JAX setting in
force, is recorded in the batch job's manifest), not the GPU effect, which docs/serving.md ("Reproducibility on
GPUs") measures with benchmarks/decode_determinism.py.
"""

import json
import types

import jax
import numpy as np
import pytest
from flax import nnx

from genrec.console import UserError
from genrec.split import leave_one_out_split
from serving import cli
from serving import recommender as recommender_module
from serving.batch_job import MANIFEST_FILE, run_batch_job
from serving.recommender import Recommender
from tests.batch_job_setup import USERS_PER_SHARD, batch_job_data, batch_job_recommender
from training import evaluate as evaluate_module

CHOICES = "'default', 'high', 'highest'"


@pytest.fixture(scope="module")
def data():
    return batch_job_data()


@pytest.fixture(scope="module")
def recommender(data):
    return batch_job_recommender(data)  # the batch-job tests' shapes: their compile serves these tests too


def _with_precision(recommender: Recommender, precision: str) -> Recommender:
    graphdef, state = recommender._graphdef, recommender._state
    return Recommender(nnx.merge(graphdef, state), recommender.vocab, recommender.sid_codes, recommender.item_ids,
                       num_beams=recommender.num_beams, batch_size=recommender.batch_size,
                       max_history=recommender.max_history, matmul_precision=precision)


def _precisions_in_force(monkeypatch, module) -> list:
    """Patches ``module.decode_batch`` to record ``jax_default_matmul_precision`` at each call (then decodes)."""
    seen, decode = [], module.decode_batch
    monkeypatch.setattr(module, "decode_batch",
                        lambda *a, **k: seen.append(jax.config.jax_default_matmul_precision) or decode(*a, **k))
    return seen


def test_a_bad_precision_is_one_line_naming_the_choices(recommender, data, tmp_path):
    with pytest.raises(ValueError, match=f"matmul_precision='fast'; use one of {CHOICES}"):
        _with_precision(recommender, "fast")
    with pytest.raises(ValueError, match=CHOICES):  # before the checkpoint is read
        Recommender.from_workdir(tmp_path / "no_workdir", matmul_precision="HIGHEST")
    splits = leave_one_out_split(data.sequences, 5)
    with pytest.raises(ValueError, match=CHOICES):
        evaluate_module.evaluate_split(nnx.merge(recommender._graphdef, recommender._state), recommender.index,
                                       data, splits.test, num_beams=6, ks=(5,), matmul_precision="tf32")
    with pytest.raises(SystemExit):  # argparse: usage line and exit status 2
        cli.main(["eval", "--workdir", str(tmp_path), "--matmul-precision", "fast"])


def test_highest_decodes_under_highest_and_equals_default_on_cpu(monkeypatch, data, recommender):
    """'highest' is the JAX setting in force while the jitted decode runs ('default' leaves JAX's own, None), and
    on a CPU (float32 at every precision) both give the same valid items and scores: the plumbing, not the GPU
    effect."""
    seen = _precisions_in_force(monkeypatch, recommender_module)
    histories = [[data.item_ids[r] for r in seq] for seq in data.sequences]
    default = recommender.recommend(histories, top_k=5, exclude_seen=True)
    highest = _with_precision(recommender, "highest").recommend(histories, top_k=5, exclude_seen=True)
    num_batches = -(-len(histories) // recommender.batch_size)
    assert num_batches >= 2 and seen == [None] * num_batches + ["highest"] * num_batches
    assert jax.config.jax_default_matmul_precision is None  # restored after the call
    assert highest.valid.all() and np.isin(highest.item_ids, data.item_ids).all()
    assert np.all(np.diff(highest.scores, axis=1) <= 0)
    np.testing.assert_array_equal(highest.item_ids, default.item_ids)
    np.testing.assert_array_equal(highest.scores, default.scores)


def test_evaluation_decodes_under_its_precision(monkeypatch, data, recommender):
    """Every decode of ``evaluate_split`` runs under its ``matmul_precision`` (its numbers: the Recommender test
    above, the same decode_batch)."""
    seen = []

    def decode(graphdef, state, index, tokens, mask, *, num_beams, normalization):
        seen.append(jax.config.jax_default_matmul_precision)  # no decode: nothing to compile
        return types.SimpleNamespace(sid_codes=np.zeros((tokens.shape[0], num_beams, data.num_levels), np.int32),
                                     valid=np.zeros((tokens.shape[0], num_beams), bool))

    monkeypatch.setattr(evaluate_module, "decode_batch", decode)
    model = nnx.merge(recommender._graphdef, recommender._state)
    examples = leave_one_out_split(data.sequences, 5).test
    for precision in ("default", "high", "highest"):
        evaluate_module.evaluate_split(model, recommender.index, data, examples, num_beams=6, batch_size=8, ks=(5,),
                                       matmul_precision=precision)
    num_batches = len(seen) // 3
    assert num_batches >= 2 and seen == [None] * num_batches + ["high"] * num_batches + ["highest"] * num_batches


def test_the_manifest_records_a_precision_and_a_resume_at_another_is_refused(tmp_path, data, recommender):
    def run(rec, out, **kwargs):
        return run_batch_job(rec, data, out, top_k=5, users_per_shard=USERS_PER_SHARD, exclude_seen=True,
                             log=lambda _: None, **kwargs)

    highest = _with_precision(recommender, "highest")
    run(recommender, tmp_path / "default")
    run(highest, tmp_path / "highest")
    settings = {name: json.loads((tmp_path / name / MANIFEST_FILE).read_text())["settings"]
                for name in ("default", "highest")}
    assert "matmul_precision" not in settings["default"]  # so jobs started before the option still resume
    assert settings["highest"]["matmul_precision"] == "highest"
    for name in ("default", "highest"):  # CPU: the same records at both precisions
        shards = sorted(p.name for p in (tmp_path / name).glob("shard-*"))
        assert len(shards) == 5
        assert all((tmp_path / name / s).read_bytes() == (tmp_path / "default" / s).read_bytes() for s in shards)

    run(highest, tmp_path / "part", max_shards=1)
    with pytest.raises(ValueError, match=r"other settings \(matmul_precision: \['highest'\] there, \[None\] now\)"):
        run(recommender, tmp_path / "part")
    run(recommender, tmp_path / "part_default", max_shards=1)
    with pytest.raises(ValueError, match=r"other settings \(matmul_precision: \[None\] there, \['highest'\] now\)"):
        run(highest, tmp_path / "part_default")


def test_the_cli_flags_reach_the_recommender_beam_handler_and_evaluation(monkeypatch, tmp_path):
    """--matmul-precision of genrec recommend (local: from_workdir; beam: the handler each worker loads from) and of
    genrec eval reaches what builds the decode; the default is 'default'."""
    beam_pipeline = pytest.importorskip("serving.beam_pipeline")
    built = []

    def record(*args, **kwargs):
        built.append(kwargs.get("matmul_precision"))
        raise UserError("stop here")  # the flag arrived: no need to load a model

    monkeypatch.setattr(Recommender, "from_workdir", record)
    monkeypatch.setattr(evaluate_module, "evaluate_workdir", record)
    handlers = []
    monkeypatch.setattr(beam_pipeline, "run_beam_job",
                        lambda *a, **k: handlers.append(beam_pipeline.RecommenderModelHandler(
                            a[0], matmul_precision=k["matmul_precision"])) or record(**k))
    out = ["--workdir", str(tmp_path), "--out", str(tmp_path / "out")]
    assert cli.main(["recommend", *out, "--matmul-precision", "highest"]) == 2
    assert cli.main(["recommend", *out]) == 2
    assert cli.main(["recommend", "--runner", "beam", *out, "--matmul-precision", "high"]) == 2
    assert cli.main(["eval", "--workdir", str(tmp_path), "--matmul-precision", "highest"]) == 2
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 2
    assert built == ["highest", "default", "high", "highest", "default"]
    # The handler Beam ships to the workers builds its Recommender with the precision.
    with pytest.raises(UserError):
        handlers[0].load_model()
    assert built[-1] == "high"
    with pytest.raises(ValueError, match=CHOICES):  # refused on the launcher, not on every worker
        beam_pipeline.RecommenderModelHandler(tmp_path, matmul_precision="fast")
