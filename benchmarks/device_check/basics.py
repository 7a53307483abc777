"""What every part of the accelerator check shares: sizes (full or smoke), time budgets, chip peaks,
XLA's cost and memory analyses, device memory, timing, random parameters of a real architecture."""
from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

# Dense peaks by device_kind (jax.devices()[0].device_kind), FLOP/s. Sources: NVIDIA H100 datasheet
# (SXM5: bf16 989.4 TFLOP/s dense, fp32 66.9, tf32 494.7); the H200's compute is the H100's (NVIDIA H200
# datasheet); A100 datasheet (bf16 312, fp32 19.5, tf32 156); Google Cloud TPU system architecture
# pages (v4 275, v5e 197, v5p 459, v6e 918 bf16 TFLOP/s per chip). `cpu`: none (MFU not reported).
PEAKS = {
    'NVIDIA H100 80GB HBM3': {'bfloat16': 989.4e12, 'float32': 66.9e12, 'tf32': 494.7e12},
    'NVIDIA H100 PCIe': {'bfloat16': 756.0e12, 'float32': 51.2e12, 'tf32': 378.0e12},
    'NVIDIA H200': {'bfloat16': 989.4e12, 'float32': 66.9e12, 'tf32': 494.7e12},
    'NVIDIA A100-SXM4-80GB': {'bfloat16': 312e12, 'float32': 19.5e12, 'tf32': 156e12},
    'NVIDIA A100-SXM4-40GB': {'bfloat16': 312e12, 'float32': 19.5e12, 'tf32': 156e12},
    'TPU v4': {'bfloat16': 275e12},
    'TPU v5 lite': {'bfloat16': 197e12},
    'TPU v5': {'bfloat16': 459e12},
    'TPU v6 lite': {'bfloat16': 918e12},
}
PEAKS_SOURCE = ('vendor datasheets, dense (no sparsity): NVIDIA H100/H200/A100; Google Cloud TPU system '
                'architecture pages')


def peak_of(device_kind: str) -> dict | None:
    if device_kind in PEAKS:
        return PEAKS[device_kind]
    for kind, peaks in PEAKS.items():  # e.g. 'NVIDIA H100 80GB HBM3' vs a variant name
        if device_kind.startswith(kind) or kind.startswith(device_kind):
            return peaks
    return None


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that differs between the accelerator run and the CPU smoke run."""
    smoke: bool
    step_batches: tuple = (128, 32)          # per-device batches (the first: parts 4 and 5)
    # part 1's variants in the order they run (the budget may stop the list): per-device batch, dtype, remat
    step_variants: tuple = ((128, 'float32', False), (128, 'bfloat16', False), (128, 'float32', True),
                            (32, 'float32', False), (32, 'bfloat16', False), (32, 'bfloat16', True))
    timed_steps: int = 20                    # median over this many steps, after warmup
    warmup: int = 2
    hungarian_batches: tuple = (128, 256)    # part 4: the matching alone
    latent: tuple = (32, 32, 4)
    loop_steps: int = 200                    # part 5
    loop_log_every: int = 50
    sample_batch: int = 256                  # part 6
    decode_batch: int = 32
    fid_samples: int = 50_000


FULL = Sizes(smoke=False)
SMOKE = Sizes(smoke=True, step_batches=(4, 2), timed_steps=3, warmup=1, hungarian_batches=(8, 16),
              step_variants=((4, 'float32', False), (4, 'bfloat16', True)),
              latent=(4, 4, 4), loop_steps=6, loop_log_every=2, sample_batch=4, decode_batch=2)


def shrink_unet(config):
    """The paper's UNet at toy size (same blocks, attention of 64 channels, norms) for the CPU smoke run."""
    with config.unlocked():
        config.model.update(img_resolution=4, model_channels=64, channel_mult=(1,), num_blocks=1,
                            attn_resolutions=(4,))
        config.model.dit.update(patch_size=2, hidden_size=32, depth=2, num_heads=2)
    return config


class Budget:
    """Seconds a part may still start work in: checked between measurements (a compile cannot be cut)."""

    def __init__(self, seconds: float):
        self.seconds, self.t0 = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


def flops_of(compiled) -> float:
    """XLA's FLOP count of a compiled program (cost_analysis is a dict, or a list of one, by version)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get('flops', float('nan')))


def memory_of(compiled) -> dict:
    """XLA's memory analysis: arguments + outputs + temporaries - donated aliases, GB."""
    m = compiled.memory_analysis()
    if m is None:
        return {}
    gb = 1e9
    return {'arguments_gb': m.argument_size_in_bytes / gb, 'outputs_gb': m.output_size_in_bytes / gb,
            'temp_gb': m.temp_size_in_bytes / gb, 'alias_gb': m.alias_size_in_bytes / gb,
            'estimate_gb': (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                            - m.alias_size_in_bytes) / gb}


def device_memory() -> dict:
    """The device's allocator statistics (bytes in use, its peak since the process started), GB;
    {} where the backend keeps none (the CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return {k.replace('bytes', 'gb'): v / 1e9 for k, v in stats.items()
            if k in ('bytes_in_use', 'peak_bytes_in_use', 'bytes_limit')}


def median_seconds(fn, repeats: int, warmup: int = 1) -> tuple[float, list]:
    """Median seconds of fn() blocked until ready, each call timed on its own, after warm-up."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def random_params(init_fn, *args, seed: int = 0, scale: float = 0.02):
    """Parameters of the right shapes without compiling the initialiser (jax.eval_shape): normal *
    scale, variances one. Random weights of a real architecture are what the timings need."""
    shapes = jax.eval_shape(init_fn, *args)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if 'var' in name or 'scale' in name:
            return np.ones(s.shape, s.dtype)
        return (scale * rng.standard_normal(s.shape)).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def build_step(config, mesh):
    """(state, compiled step) as `loop.build_training` makes them, but with random parameters drawn on
    the host (`random_params`): no initialiser to compile per variant (on a loaded CPU that compile
    cost more than the step's)."""
    import jax.numpy as jnp

    from lct_jax.builders import build_model, build_objective
    from lct_jax.train import loop
    from lct_jax.train.state import init_state, lr_schedule, make_optimizer
    from lct_jax.train.step import make_train_step
    model, objective = build_model(config), build_objective(config)
    opt_cfg = loop._opt_cfg(config)
    optimizer = make_optimizer(opt_cfg)
    m = config.model
    x = jnp.zeros((1, m.img_resolution, m.img_resolution, m.in_channels))
    params = random_params(model.init, jax.random.key(config.seed), x, jnp.zeros((1,)))['params']

    def make(p):
        return init_state(p, optimizer, config.ema_decays)

    shardings = loop.state_shardings_of(config, jax.eval_shape(make, params), mesh)
    state = jax.jit(make, out_shardings=shardings)(params)
    step = make_train_step(model, objective, optimizer, lr_schedule(opt_cfg), loop.step_config(config), mesh,
                           state_sharding=shardings)
    return state, step


# XLA's CPU compiler at its lowest optimisation: the smoke run's programs are toys, and compiling
# them at -O0 takes about a third of the time (its ~25 programs must fit in two minutes).
SMOKE_XLA_FLAGS = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
