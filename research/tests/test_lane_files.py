"""research/lanes/*.sh: every run a lane file names would start on the GPU host.

A typo in a lane (a config that does not exist, a misspelt ``--set`` key, a
run name the result scripts cannot parse, the same run twice) is found only
after the device machine has started and spent its time; these checks find
it here, on the CPU, by sourcing each file with bash and loading each run's
config with its overrides.
"""

import shlex
from pathlib import Path

import pytest
from research_scripts import load_script

from training.config import load_config_file

REPO = Path(__file__).resolve().parents[2]
LANE_FILES = sorted((REPO / "research" / "lanes").glob("*.sh"))
DATASETS = {"Office", "Beauty"}
lane_runs = load_script("lane_files").lane_runs


def test_lane_files_exist():
    assert LANE_FILES, "research/lanes/ holds the lane files reproduce_gpu.sh runs"


@pytest.mark.parametrize("path", LANE_FILES, ids=lambda p: p.name)
def test_every_lane_run_loads(path):
    run_re = load_script("collect_results").RUN_RE
    runs = lane_runs(path)
    assert runs, f"{path.name} defines no LANE_GPU<g>_<A|B> run"
    names = [name for name, *_ in runs]
    assert len(names) == len(set(names)), f"{path.name} names a run twice"
    for name, config, dataset, overrides in runs:
        assert run_re.match(name), f"{name}: not <dataset>_<arch>_<method>_s<seed>"
        assert name.startswith(dataset.lower() + "_"), f"{name} runs on {dataset}"
        assert dataset in DATASETS, name
        config_file = config.split(":")[0]
        assert (REPO / "tpu_configs" / config_file).is_file(), f"{name}: no tpu_configs/{config_file}"
        words = shlex.split(overrides)
        assert words[0::2] == ["--set"] * (len(words) // 2) and len(words) % 2 == 0, (name, overrides)
        loaded = load_config_file(REPO / "tpu_configs" / config, words[1::2])
        seed = int(name.rsplit("_s", 1)[1])
        assert loaded.seed == seed, f"{name}: the name says seed {seed}, the overrides give {loaded.seed}"
