"""Our train step beside a PyTorch step of the same UNet, loss and optimizer, on this CPU.

`python benchmarks/vs_pytorch.py [--xla-flags "..."]` prints one JSON line: the median seconds of
our update program and of the PyTorch step, their calls interleaved (same load), and the ratio.
benchmarks/run.py runs it in subprocesses, one per XLA flag set (XLA reads its flags once, at
start-up), so every ratio is measured in one run beside its own PyTorch baseline.

The PyTorch step is the authors' recipe written for this benchmark: the EDM DhariwalUNet of
tests/reference/torch_unet.py (NCHW, the same architecture and parameter count as ours), boundary
scalings and noise conditioning as spec §3, the target under no_grad with the same dropout-free
network, the Cauchy loss on the per-sample mean of squared residuals, the early-timestep diffusion
loss, torch.optim.RAdam with coupled weight decay, two EMAs. The OT pairing is left out of both
(ours pairs on the host, ahead of the step; the authors pair with POT before it): this compares
the network step.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from lct_jax.data.pipeline import HostBatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PAPER_UNET = dict(img_resolution=32, in_channels=4, out_channels=4, channel_mult=(1, 2, 3, 4),
                  num_blocks=4, attn_resolutions=(16, 8))


def torch_step_fn(channels: int, batch: int, seed=0):
    import numpy as np
    import torch

    from tests.reference.torch_unet import DhariwalUNet
    torch.manual_seed(seed)
    net = DhariwalUNet(**PAPER_UNET, model_channels=channels)
    opt = torch.optim.RAdam([p for p in net.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    emas = [[p.detach().clone() for p in net.parameters()] for _ in range(2)]
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(0.5 * rng.standard_normal((batch, 4, 32, 32)).astype(np.float32))
    z = torch.from_numpy(rng.standard_normal((batch, 4, 32, 32)).astype(np.float32))
    sd, smin = 0.5, 0.002

    def f(xt, sigma):
        c_skip = sd**2 / ((sigma - smin) ** 2 + sd**2)
        c_out = (sigma - smin) * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        b = lambda a: a[:, None, None, None]
        return b(c_skip) * xt + b(c_out) * net(b(c_in) * xt, 250 * sigma.log())

    def step():
        sigma = torch.exp(-1.1 + 2.0 * torch.randn(batch)).clamp(0.002, 80)
        sigma_next = sigma * 0.9
        student = f(x + sigma[:, None, None, None] * z, sigma)
        with torch.no_grad():
            target = f(x + sigma_next[:, None, None, None] * z, sigma_next)
        m = (student - target).square().mean(dim=(1, 2, 3))
        c = 0.03456
        ct = (torch.log1p(m / c**2) / (sigma - sigma_next)).mean()
        diff = ((student - x).square().mean(dim=(1, 2, 3)) * (sigma > 1.0)).mean()
        loss = ct + 5.0 * diff
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for ema, d in zip(emas, (0.9999, 0.99993)):
                torch._foreach_mul_(ema, d)
                torch._foreach_add_(ema, [p.detach() for p in net.parameters()], alpha=1 - d)
        return float(loss.detach())

    return step


def jax_step_fn(channels: int, batch: int):
    import jax
    import numpy as np

    from configs import celebahq256
    from lct_jax import parallel
    from lct_jax.train import loop
    config = celebahq256.get_config()
    with config.unlocked():
        config.model.model_channels = channels
        config.batch_size = batch
    mesh = parallel.make_mesh(jax.devices()[:1])
    _, _, state, step = loop.build_training(config, mesh)
    pairer = loop.make_host_pairer(config, mesh)
    x = (0.5 * np.random.default_rng(0).standard_normal((batch, 32, 32, 4))).astype(np.float32)
    paired = loop.device_batch(HostBatch.of(x, pairer, 0), mesh)
    pairer.close()
    holder = {'state': state}

    def run():
        holder['state'], metrics = step(holder['state'], paired)
        return float(metrics['loss'])

    return run


def conv_pair(batch=16, channels=128, res=32):
    """(ours, theirs): forward + backward of one 3x3 convolution, XLA (NHWC, as our UNet) and PyTorch
    (NCHW): where the step's time goes on both sides."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, res, res, channels)).astype(np.float32)
    w = (0.05 * rng.standard_normal((3, 3, channels, channels))).astype(np.float32)

    def loss(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        return jnp.sum(y * y)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    wt = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_(True)

    def theirs():
        y = torch.nn.functional.conv2d(xt, wt, padding=1)
        (y * y).sum().backward()

    return (lambda: jax.block_until_ready(grad(xj, wj))), theirs


def interleaved(fns: dict, repeats: int) -> dict:
    import numpy as np
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def measure(channels=64, batch=16, repeats=5, threads=0):
    import torch
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    ours = jax_step_fn(channels, batch)
    ours()                      # compiles
    compile_s = time.perf_counter() - t0
    theirs = torch_step_fn(channels, batch)
    med = interleaved({'ours': ours, 'pytorch': theirs}, repeats)
    conv_ours, conv_theirs = conv_pair(batch)
    conv = interleaved({'ours': conv_ours, 'pytorch': conv_theirs}, 3 * repeats)
    return {'conv3x3_128ch_fwd_bwd_ours_seconds': conv['ours'], 'conv3x3_128ch_fwd_bwd_pytorch_seconds': conv['pytorch'],
            'conv_ratio': conv['ours'] / conv['pytorch'],
            'channels': channels, 'batch': batch, 'repeats': repeats, 'ours_seconds': med['ours'],
            'load_average_1min': os.getloadavg()[0],  # this machine is shared: say how busy it was
            'pytorch_seconds': med['pytorch'], 'vs_pytorch_step_ratio': med['ours'] / med['pytorch'],
            'ours_first_call_seconds': compile_s, 'torch_threads': torch.get_num_threads(),
            'xla_flags': os.environ.get('XLA_FLAGS', '')}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--channels', type=int, default=64)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=0, help='PyTorch intra-op threads (0: its default); give '
                   'XLA the same through XLA_FLAGS')
    args = p.parse_args()
    print(json.dumps(measure(args.channels, args.batch, args.repeats, args.threads)), flush=True)


if __name__ == '__main__':
    main()
