"""APAO pointwise as level-weighted token CE: the level weights each run trained
with, and whether test Recall@10 follows them.

The pointwise objective ``CE + beta sum_t w_t L_t`` has, for the step's
weights ``w``, the gradient of ``-sum_j c_j mean_b l_bj`` with
``c = prefix_weights.pointwise_token_weights(w, ...)`` (docs/losses.md). Every
pointwise variant (beta, eta, per-batch or running weights) therefore only
changes how much each SID level's token counts; CE is ``c_j = 1/T``. Adam
undoes a common scale of all ``c_j`` (up to gradient clipping), so the
comparable quantity is the profile ``c / sum(c)``, and mainly the first
level's share of it.

For each run of ``--dir`` (``<dataset>_<arch>_<method>_s<seed>.json``, as
summarize_results.py reads them) this script finds the loss settings it ran
with (the lane line of ``research/lanes/*.sh`` that names it, else
``tpu_configs/<dataset>_<arch>.py:loss=<method>``), and the prefix weights over
its training: its own ``train_curves/<run>.train.jsonl`` where saved, else a
stand-in (running weights: the mean of its group's runs that have records;
per-batch weights: ``traces/<dataset>_<arch>_apao_trace_per_batch.train.jsonl``
(each file may also be ``.gz``-compressed, as collect_results.py stores them),
one beta 0.3 run, whose weights are ~b / sum(b) and so depend little on beta;
without a trace, the per-batch rule ``b e^{eta b}`` normalised, applied to the
mean prefix losses ``b`` that the dataset's recorded runs logged).
It prints, per group, the profile averaged over the records up to the best
checkpoint and at it, and per (dataset, arch), the least-squares slope of
test Recall@10 on the first level's averaged share over all CE and pointwise
runs, with a 95% bootstrap interval over runs and a two-sided permutation p
(run values shuffled over shares).
Runs whose checkpoint was selected another way (on validation cross-entropy,
``_vce``, or on the full validation split, ``_fullval``) and other kinds are
left out: the slope compares loss weightings under one selection rule.

Run: python research/level_profile.py --dir research/results_raw/2026-11-26
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "research"))
from lane_files import lane_runs  # noqa: E402
from prefix_weights import pointwise_token_weights  # noqa: E402
from raw_files import find, run_name  # noqa: E402
from summarize_results import load_curves, load_runs, read_records, slashed  # noqa: E402

from training.config import load_config_file  # noqa: E402
from training.losses import LossConfig  # noqa: E402

METRIC = "recall@10"


def has_weights(record: dict) -> bool:
    return bool(record.get("prefix_weights"))


OTHER_SELECTION = ("_vce", "_fullval")  # method suffixes of runs selected by another rule


def lane_settings(lanes_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """``{run name: (config name, overrides)}`` of every run the lane files of ``lanes_dir`` name."""
    settings = {}
    for path in sorted(lanes_dir.glob("*.sh")):
        for name, config, _, overrides in lane_runs(path):
            settings[name] = (config, shlex.split(overrides)[1::2])  # the values of "--set key=value"
    return settings


def loss_config_of(run: dict, lanes: dict[str, tuple[str, list[str]]], config_dir: Path) -> LossConfig | None:
    """The run's LossConfig, or None when no config can be found for it."""
    if run["name"] in lanes:
        config, overrides = lanes[run["name"]]
        return load_config_file(config_dir / config, overrides).loss
    try:
        return load_config_file(config_dir / f"{run['dataset']}_{run['arch']}.py:loss={run['method']}").loss
    except (FileNotFoundError, ValueError):  # no base for the dataset and arch, or the method is no loss variant
        return None


def level_weights(weight_records: list[list[float]] | None, loss: LossConfig, sid_length: int) -> np.ndarray:
    """``[records, T]`` token-CE level weights ``c`` (one row of 1/T for CE)."""
    if loss.kind == "ce" or not weight_records:
        return np.full((1, sid_length), 1.0 / sid_length)
    return pointwise_token_weights(np.asarray(weight_records), sid_length=sid_length, beta=loss.beta,
                                   prefix_tau=loss.prefix_tau, use_ce=loss.use_ce)


def slope_test(shares: np.ndarray, values: np.ndarray, *, num_permutations: int = 20_000,
               num_resamples: int = 5_000, seed: int = 0) -> tuple[float, float, float, float]:
    """Least-squares slope of ``values`` on ``shares``, its two-sided permutation p, and a
    95% bootstrap interval (runs resampled with replacement; resamples with one distinct
    share are skipped). Returns ``(slope, p, low, high)``; all NaN when ``shares`` are equal."""
    centred = shares - shares.mean()
    denominator = (centred ** 2).sum()
    if denominator == 0:
        return (float("nan"),) * 4
    slope = float(centred @ (values - values.mean()) / denominator)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(values) for _ in range(num_permutations)])
    slopes = shuffled @ centred / denominator
    p = (1 + np.count_nonzero(np.abs(slopes) >= abs(slope) - 1e-15)) / (1 + num_permutations)
    index = rng.integers(0, len(shares), size=(num_resamples, len(shares)))
    x, y = shares[index], values[index]  # [resamples, runs]
    x_centred = x - x.mean(axis=1, keepdims=True)
    spread = (x_centred ** 2).sum(axis=1)
    keep = spread > 1e-15
    boot = (x_centred * (y - y.mean(axis=1, keepdims=True))).sum(axis=1)[keep] / spread[keep]
    low, high = np.quantile(boot, [0.025, 0.975])
    return slope, float(p), float(low), float(high)


@dataclasses.dataclass
class TrainedWeights:
    """One run, its loss settings, and the prefix weights ``[records, P]`` it trained with up
    to its best checkpoint (None for CE or when unknown), with where they come from."""

    run: dict
    loss: LossConfig
    weights: list[list[float]] | None = None
    source: str | None = None

    @property
    def group(self) -> tuple[str, str, str]:
        return self.run["dataset"], self.run["arch"], self.run["method"]

    def until_best(self, records: list[dict]) -> list[dict]:
        best = self.run["best_step"]
        return [r for r in records if best is None or r["step"] <= best]


def fill_stand_in(entry: TrainedWeights, entries: list[TrainedWeights], curves: dict[str, list[dict]],
                  traces: dict[str, Path]) -> None:
    """Weights for a pointwise run that saved no training records (see the module docstring)."""
    run, loss = entry.run, entry.loss
    if loss.running_weights:
        same = [e.weights for e in entries if e.source == "own records" and e.group == entry.group]
        if same:
            length = min(map(len, same))
            entry.weights = np.mean([np.asarray(w[:length]) for w in same], axis=0).tolist()
            entry.source = "group mean"
        return
    trace = traces.get(f"{run['dataset']}_{run['arch']}_apao_trace_per_batch")
    if trace is not None:
        records = entry.until_best(read_records(trace, "train", has_weights))
        entry.weights, entry.source = [r["prefix_weights"] for r in records], "per-batch trace"
        return
    # The per-batch rule applied to the prefix losses the dataset's recorded runs logged.
    losses = [[r["prefix_losses"] for r in entry.until_best(curves[e.run["name"]])] for e in entries
              if e.run["name"] in curves and e.group[:2] == entry.group[:2]]
    if losses:
        length = min(map(len, losses))
        b = np.mean([np.asarray(x[:length]) for x in losses], axis=0)  # [records, P]
        w = b * np.exp(loss.eta * b)
        entry.weights = (w / w.sum(axis=-1, keepdims=True)).tolist()
        entry.source = "per-batch rule on logged losses"


def collect(folder: Path, lanes: dict[str, tuple[str, list[str]]], config_dir: Path) -> list[TrainedWeights]:
    """Every CE and pointwise run of ``folder`` (other selection rules left out) with the weights it trained with."""
    curves = load_curves(folder, "train", has_weights)
    traces = {run_name(path, ".train.jsonl"): path for path in find(folder / "traces", ".train.jsonl")}
    entries = []
    for run in load_runs(folder, [METRIC]):
        if run["method"].endswith(OTHER_SELECTION):
            continue
        loss = loss_config_of(run, lanes, config_dir)
        if loss is None or loss.kind not in ("ce", "apao_pointwise"):
            continue
        entry = TrainedWeights(run, loss)
        records = entry.until_best(curves.get(run["name"], []))
        if records:
            entry.weights, entry.source = [r["prefix_weights"] for r in records], "own records"
        entries.append(entry)
    for entry in entries:
        if entry.loss.kind != "ce" and entry.weights is None:
            fill_stand_in(entry, entries, curves, traces)
    return [e for e in entries if e.loss.kind == "ce" or e.weights]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="research/results_raw/2026-11-26")
    p.add_argument("--lanes", default=str(REPO / "research" / "lanes"))
    p.add_argument("--configs", default=str(REPO / "tpu_configs"))
    p.add_argument("--sid-length", type=int, default=4)
    args = p.parse_args(argv)
    T = args.sid_length
    entries = collect(Path(args.dir), lane_settings(Path(args.lanes)), Path(args.configs))

    groups: dict[tuple[str, str, str], list[TrainedWeights]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    print("Token-CE level weights c / sum(c) (levels 1-4) that each group trained with, averaged over "
          "the training records up to the best checkpoint and at the last of them; sum(c) is the scale "
          "Adam undoes up to clipping.\n")
    print("| dataset | arch | method | runs | beta | weights from | averaged | at best | sum(c) at best | "
          f"test {METRIC} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    per_run = []  # (dataset, arch, averaged level-1 share, test metric)
    for (dataset, arch, method), members in groups.items():
        averaged, at_best, scale = [], [], []
        for e in members:
            c = level_weights(e.weights, e.loss, T)
            prof = c / c.sum(axis=-1, keepdims=True)
            averaged.append(prof.mean(axis=0))
            at_best.append(prof[-1])
            scale.append(c[-1].sum())
            per_run.append((dataset, arch, float(averaged[-1][0]), e.run["test"][METRIC]))
        loss = members[0].loss
        sources = sorted({e.source for e in members if e.source})
        print(f"| {dataset} | {arch} | {method} | {len(members)} | {loss.beta if loss.kind != 'ce' else '-'} | "
              f"{', '.join(sources) or '-'} | {slashed(np.mean(averaged, axis=0))} | "
              f"{slashed(np.mean(at_best, axis=0))} | "
              f"{np.mean(scale):.3f} | {np.mean([e.run['test'][METRIC] for e in members]):.4f} |")

    print(f"\nTest {METRIC} against the first level's averaged share, over runs (CE and pointwise):\n")
    print("| dataset | arch | runs | share range | slope per +0.1 share | 95% bootstrap interval | "
          "permutation p (two-sided) |")
    print("|---|---|---|---|---|---|---|")
    for dataset, arch in sorted({(d, a) for d, a, *_ in per_run}):
        shares = np.array([s for d, a, s, _ in per_run if (d, a) == (dataset, arch)])
        values = np.array([v for d, a, _, v in per_run if (d, a) == (dataset, arch)])
        if len(np.unique(shares)) < 2:  # nothing to fit (e.g. CE runs only)
            continue
        slope, p_value, low, high = slope_test(shares, values)
        print(f"| {dataset} | {arch} | {len(shares)} | {shares.min():.3f}-{shares.max():.3f} | "
              f"{0.1 * slope:+.4f} | [{0.1 * low:+.4f}, {0.1 * high:+.4f}] | {p_value:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
