"""Progress bars of the batch job and the training loop (genrec/progress.py): drawn
to stderr on a terminal, with the rate in the loop's unit; nothing off a TTY."""

from pathlib import Path

import pytest
from flax import nnx

from genrec.models import ModelConfig, build_model
from genrec.synthetic import make_synthetic_dataset
from serving.batch_job import run_batch_job
from serving.recommender import Recommender
from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    return make_synthetic_dataset(num_items=50, num_users=18, num_levels=3, codebook_size=4, seed=5)


@pytest.fixture(scope="module")
def recommender(data):
    config = ModelConfig.tiny(data.vocab.vocab_size, data.num_levels, num_encoder_layers=1, num_decoder_layers=1)
    return Recommender(build_model(config, rngs=nnx.Rngs(0)), data.vocab, data.sid_codes, data.item_ids,
                       num_beams=6, batch_size=4, max_history=5)


def _force_tty(monkeypatch):
    monkeypatch.setattr("genrec.progress.progress_enabled", lambda: True)


def test_batch_job_draws_nothing_off_a_tty(tmp_path, data, recommender, capsys):
    lines = []  # capsys's stderr is not a TTY: the bar is off, the log lines stay
    run_batch_job(recommender, data, tmp_path, top_k=5, users_per_shard=4, log=lines.append)
    assert capsys.readouterr().err == ""
    assert any("users/s" in line for line in lines)


def test_batch_job_bar_counts_users_from_where_it_resumes(tmp_path, data, recommender, capsys, monkeypatch):
    _force_tty(monkeypatch)
    run_batch_job(recommender, data, tmp_path, top_k=5, users_per_shard=4, max_shards=2, log=lambda _: None)
    first = capsys.readouterr().err
    assert "recommend" in first and " 0/18 " in first and "user/s" in first
    run_batch_job(recommender, data, tmp_path, top_k=5, users_per_shard=4, log=lambda _: None)
    assert " 8/18 " in capsys.readouterr().err  # the two finished shards' 8 users count from the start


def test_training_draws_a_bar_over_the_steps_on_a_tty(tmp_path, capsys, monkeypatch):
    _force_tty(monkeypatch)
    overrides = [
        "data.synthetic.num_users=100", "data.synthetic.num_items=120", "data.synthetic.codebook_size=8",
        "model.num_encoder_layers=1", "model.num_decoder_layers=1", "batch_size=32", "num_steps=3",
        "eval_every=0", "log_every=3", "checkpoint.async_save=false",
    ]
    train(load_config_file(REPO / "tpu_configs/cpu_smoke.py", overrides), tmp_path, resume=False)
    err = capsys.readouterr().err
    assert "/3 " in err and "step/s" in err and "train epoch 1" in err
