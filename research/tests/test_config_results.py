"""The expected results the tpu_configs/ docstrings state are the kept runs' results:
every "Recall@10 X (N seeds)" of a variant is the mean test Recall@10 of exactly N
runs in research/results_raw/*/<group>_s<seed>.json[.gz] (no invented or stale figures)."""

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
from research_scripts import load_script

raw_files = load_script("raw_files")

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "tpu_configs"
RESULTS_RAW = REPO / "research" / "results_raw"
# A documented variant: "`genrec train --config tpu_configs/FILE[:ARG] ...`: result" (the result may wrap).
VARIANT_RE = re.compile(r"^`genrec train --config tpu_configs/(\S+) [^`]*`:\s*(.*?)(?=\n`|\n\n|\Z)", re.M | re.S)
MEASURED_RE = re.compile(r"Recall@10 (0\.\d{4}) \((\d+) seeds?\)")
# The run group of a variant whose runs are not named <base>_<loss> (docs/results.md, the methods table).
RUN_GROUPS = {
    "office_t5.py:loss=ce": "office_t5_ce_hf",  # model=hf, the default since 2026-12-06
    "office_t5.py:loss=apao_pairwise,model=default": "office_t5_apao_pairwise_b01_unshared",
    "beauty_t5.py:loss=ce": "beauty_t5_ce_hf",  # model=hf, the default since 2026-12-07
    "beauty_t5.py:loss=ce,model=default": "beauty_t5_ce_fullval",
    "beauty_t5.py:loss=apao,model=default": "beauty_t5_apao_fullval",
    "beauty_t5.py:loss=msl,model=default": "beauty_t5_msl_fullval",
    "beauty_t5.py:loss=apao_pairwise,dtype=bfloat16,model=default": "beauty_t5_apao_pairwise_fullval",
}


def measured_variants() -> list[tuple[str, str, int]]:
    """``[(FILE:ARG, Recall@10 as written, seed count)]`` of every variant stated as measured."""
    found = []
    for path in sorted(CONFIG_DIR.glob("*.py")):
        for spec, result in VARIANT_RE.findall(ast.get_docstring(ast.parse(path.read_text())) or ""):
            found += [(spec, recall, int(seeds)) for recall, seeds in MEASURED_RE.findall(result)]
    return found


MEASURED = measured_variants()


def run_group(spec: str) -> str:
    """The results_raw group of ``spec``'s runs: RUN_GROUPS, else ``<base>_<loss>``."""
    if spec in RUN_GROUPS:
        return RUN_GROUPS[spec]
    base, _, arg = spec.partition(":")
    loss = dict(piece.split("=") for piece in arg.split(","))["loss"]
    return f"{base.removesuffix('.py')}_{loss}"


def test_measured_variants_are_found():
    assert len(MEASURED) >= 10, MEASURED
    assert set(RUN_GROUPS) <= {spec for spec, *_ in MEASURED}, "RUN_GROUPS names a variant no docstring states"


@pytest.mark.parametrize("spec, recall, seeds", MEASURED, ids=[spec for spec, *_ in MEASURED])
def test_stated_recall_is_the_mean_of_the_kept_runs(spec, recall, seeds):
    group = run_group(spec)
    files = sorted([*RESULTS_RAW.glob(f"*/{group}_s*.json"), *RESULTS_RAW.glob(f"*/{group}_s*.json.gz")])
    raw_files.check_unique(files)
    values = [json.loads(raw_files.read_text(f))["test_metrics"]["recall@10"] for f in files]
    assert len(values) == seeds, (spec, group, [f.name for f in files])
    assert f"{np.mean(values):.4f}" == recall, (spec, group, np.mean(values))
