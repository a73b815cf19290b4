"""Reading ``research/lanes/*.sh``, the lane files research/reproduce_gpu.sh runs.

A lane file exports ``LANE_GPU<g>_<A|B>`` variables, each holding lines
``name|config|dataset|overrides`` (config: a file of tpu_configs/ with its
argument, as ``--config`` takes it after ``tpu_configs/``, e.g.
``office_t5.py:loss=apao``; overrides: ``--set key=value`` pairs).
:func:`lane_runs` reads them the way reproduce_gpu.sh does, by sourcing the
file in a clean bash, so what it returns is what the GPU host would run.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path


def lane_runs(path: Path) -> list[tuple[str, str, str, str]]:
    """Source ``path`` in a clean bash and return every ``(name, config, dataset, overrides)`` line."""
    script = f"source {shlex.quote(str(path))}; for v in ${{!LANE_GPU@}}; do printf '%s\\n' \"${{!v}}\"; done"
    out = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    runs = []
    for line in out.splitlines():
        if line.strip():
            fields = line.split("|")
            if len(fields) != 4:
                raise ValueError(f"{path.name}: not name|config|dataset|overrides: {line!r}")
            runs.append(tuple(fields))
    return runs
