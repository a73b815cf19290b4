"""Fault suite: users with fewer than 3 interactions (cold start, empty
histories included) are served by ``genrec recommend``, not dropped; leave-one-out
evaluation keeps its 3-interaction minimum."""

import json
from pathlib import Path

from logging_state import kept_logging
from train_cli import TINY_RUN

from genrec.run_files import load_run_data, load_workdir_data, read_run_info
from genrec.synthetic import write_sid_dataset
from serving.cli import main
from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[2]
TINY = ["num_steps=2", "eval_every=0", *TINY_RUN]


def test_short_and_empty_histories_are_served(tmp_path, capsys):
    workdir = tmp_path / "run"
    with kept_logging():
        train(load_config_file(REPO / "tpu_configs/cpu_smoke.py", TINY), workdir)
    data = load_run_data(read_run_info(workdir).data)
    write_sid_dataset(data, tmp_path / "data", "users")
    inter_path = tmp_path / "data" / "users.inter.json"
    interactions = json.loads(inter_path.read_text())
    item = str(data.item_ids[0])
    interactions.update({"cold-0": [], "cold-1": [item], "cold-2": [item, str(data.item_ids[1])]})
    inter_path.write_text(json.dumps(interactions))

    assert load_workdir_data(workdir, tmp_path / "data", data.vocab).num_users == data.num_users  # evaluation
    with kept_logging():
        assert main(["recommend", "--workdir", str(workdir), "--which", "latest", "--data", str(tmp_path / "data"),
                     "--out", str(tmp_path / "recs"), "--num-beams", "5", "--top-k", "5"]) == 0
    out = capsys.readouterr().out
    lines = [json.loads(line) for shard in sorted((tmp_path / "recs").glob("shard-*.jsonl"))
             for line in shard.read_text().splitlines()]
    assert len(lines) == data.num_users + 3
    served = {line["user"]: line["items"] for line in lines}
    assert all(len(served[user]) == 5 for user in ("cold-0", "cold-1", "cold-2"))
    assert f"done: {data.num_users + 3} users (3 with fewer than 3 interactions" in out
