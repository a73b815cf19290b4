"""Test session set-up (must happen before jax is imported):

- eight fake CPU devices, so data-parallel code is exercised on any machine;
- XLA's CPU backend unoptimised, with its older fusion emitters and one LLVM module
  per program where this XLA has them (programs compile faster; the tests' time is
  mostly compiling);
- one persistent XLA compilation cache for the session, in a fresh temporary
  folder removed at exit. The end-to-end tests start training processes that
  compile the same programs again (uninterrupted run, killed run, resumed
  run); with the shared cache the later ones load them instead. On 2 CPU
  cores the whole suite took 389 s against 450 s without it (one run each,
  same machine; test_train_resume.py's kill-and-resume test 23 s against
  42 s). Set JAX_COMPILATION_CACHE_DIR
  yourself to choose the folder (it is then kept).
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    flags = (flags + " --xla_force_host_platform_device_count=8").strip()
# Tests run tiny programs whose time is mostly XLA's CPU compile: the unoptimised
# backend compiles them in about 60% of the time (tests/test_value_head.py and
# tests/test_constrained_sampling.py: 41 s against 67 s of CPU), and every result is still checked
# against its reference. Benchmarks never run under this flag.
if "xla_backend_optimization_level" not in flags:
    flags = (flags + " --xla_backend_optimization_level=0").strip()
# XLA's older CPU fusion emitters, and one LLVM module per program instead of several
# compiled in parallel (the two workers already fill both cores): the tiny train step
# compiles in 2.5-3.6 s of CPU against 7.4-7.8 s with the defaults, and its results
# are bit for bit the same (one apao_pairwise step on 8 devices: same parameters,
# optimizer state and metrics); tests/test_rl_step.py took 54 s of CPU against 105 s.
# Speed only, and an XLA release may drop them (an unknown flag in XLA_FLAGS aborts the
# process): they are added only if a probe process starts with them, decided once a session
# (xdist's workers inherit the answer); setting either yourself skips this.
FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
_FAST_COMPILE_ANSWER = "GENREC_TEST_FAST_COMPILE_FLAGS"


def _jax_starts_with(xla_flags: str) -> bool:
    """Whether ``import jax; jax.devices()`` succeeds in a fresh process with ``XLA_FLAGS=xla_flags``."""
    env = {**os.environ, "XLA_FLAGS": xla_flags}
    try:
        probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                               capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


if "xla_cpu_use_fusion_emitters" not in flags and "xla_cpu_parallel_codegen_split_count" not in flags:
    if _FAST_COMPILE_ANSWER not in os.environ:
        accepted = _jax_starts_with(f"{flags} {FAST_COMPILE_FLAGS}")
        os.environ[_FAST_COMPILE_ANSWER] = FAST_COMPILE_FLAGS if accepted else ""
    flags = f"{flags} {os.environ[_FAST_COMPILE_ANSWER]}".strip()
os.environ["XLA_FLAGS"] = flags

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="genrec-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    # The smoke runs' programs compile in well under the 1 s default threshold.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
