"""Micro-timings behind the decoder's design choices (GPU): exact top-k
variants over wide rows, and the random-logit model's own cost.

Run: PYTHONPATH=. python benchmarks/topk_micro.py
"""

import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax


def bench(fn, *args, trials=50):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(trials):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def chunked_top_k(x, k, chunk):
    """Exact: top-k of each chunk, then top-k of the survivors."""
    rows, width = x.shape
    n = width // chunk
    v, i = lax.top_k(x.reshape(rows, n, chunk), min(k, chunk))
    i = i + (jnp.arange(n) * chunk)[None, :, None]
    v2, j = lax.top_k(v.reshape(rows, -1), k)
    return v2, jnp.take_along_axis(i.reshape(rows, -1), j, axis=1)


def main():
    print(jax.devices())
    key = jax.random.key(0)
    for rows, width, k in [(5120, 2048, 20), (140, 2048, 70), (512, 256, 20), (140, 256, 70), (5120, 256, 20)]:
        x = jax.random.normal(key, (rows, width))
        base = bench(jax.jit(lambda x: lax.top_k(x, k)), x)
        line = f"rows={rows} width={width} k={k}: top_k {base:.3f} ms"
        for chunk in (128, 256, 512):
            if chunk < width and chunk >= k:
                f = jax.jit(lambda x, c=chunk: chunked_top_k(x, k, c))
                a, b = f(x), lax.top_k(x, k)
                assert bool(jnp.all(a[0] == b[0])), "chunked top-k differs"
                line += f" | chunk{chunk} {bench(f, x):.3f}"
        sort_t = bench(jax.jit(lambda x: lax.sort(x, dimension=-1)), x)
        line += f" | full sort {sort_t:.3f}"
        print(line, flush=True)
    for shape in [(256, 20, 2048), (2, 70, 2048)]:
        f = jax.jit(lambda k: jax.nn.logsumexp(jax.random.uniform(k, shape), -1))
        g = jax.jit(lambda k: jax.random.uniform(k, shape))
        print(f"random uniform {shape}: {bench(g, key):.3f} ms; + logsumexp {bench(f, key):.3f} ms", flush=True)
    print(f"empty jit call: {bench(jax.jit(lambda k: k + 1), jnp.ones(())):.3f} ms")


if __name__ == "__main__":
    main()
