"""The training loop's progress bar (genrec/progress.py): drawn to stderr on a
terminal, with the rate in steps; the batch job's bar is tested in test_batch_job.py."""

from pathlib import Path

from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[1]


def _force_tty(monkeypatch):
    monkeypatch.setattr("genrec.progress.progress_enabled", lambda: True)


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
