"""The host's input pipeline: the reader alone against what a step consumes (`input_pipeline`), and
the whole pipeline (read, parse, normalise, noise, OT pairing, assembly) on one core and on every
core, projected to an accelerator host's share of cores (`host_pipeline`, benchmarks/host_pipeline.py)."""
from __future__ import annotations

import json
import os
import tempfile
import time

import host_pipeline
import numpy as np
import pairing
from common import analytic_forward_flops

from configs import celebahq256, default


def reader_rate(shape, batch, n=4096, steps=20):
    """Examples/s of the input pipeline reading (no pairing) `steps` batches of random latents."""
    from lct_jax.data import encode as encode_lib
    from lct_jax.data import latents, tfrecord
    from lct_jax.data.pipeline import InputPipeline, Normalizer
    d = tempfile.mkdtemp()
    names = [latents.shard_name(i, 2) for i in range(2)]
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        with tfrecord.TFRecordWriter(os.path.join(d, name)) as w:
            for j in range(i * n // 2, (i + 1) * n // 2):
                w.write(tfrecord.encode_latent(rng.standard_normal(shape).astype(np.float32), j))
    encode_lib.write_stats(d, names, 1.0, shape)
    json.dump({'count': n, 'shape': list(shape), 'dtype': 'float32', 'scale_factor': 1.0, 'shards': names},
              open(os.path.join(d, latents.MANIFEST), 'w'))
    ds = latents.LatentDataset(d)
    p = InputPipeline(ds, Normalizer.from_dir(d), batch, 0, slice(0, batch))
    next(p)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(p)
    p.close()
    return batch * steps / (time.perf_counter() - t0)


def _input_pipelines(r, mesh, quick):
    out = {}
    paper_step_s = r['ot_fraction']['step_seconds'] if 'ot_fraction' in r else float('nan')
    for name, cfg, shape in (('default', default.get_config(), (8, 8, 1)),
                             ('paper', celebahq256.get_config(), (32, 32, 4))):
        eps = reader_rate(shape, cfg.batch_size)
        consumed = cfg.batch_size / (r['default']['step_seconds'] if name == 'default' else paper_step_s)
        out[f'input_pipeline_{name}'] = {'reader_examples_per_s': eps, 'step_consumes_examples_per_s': consumed,
                                         'headroom': eps / consumed}
    return out


def _host_pipeline(r, mesh, quick):
    scaling = host_pipeline.scaling(steps=30 if quick else 80)
    # The accelerators' consumption: host_pairing_headroom's projection (its per-core rate is unused here).
    consumption = r.get('host_pairing_headroom') or pairing.headroom(
        4 * analytic_forward_flops(celebahq256.get_config(), 1), 1.0)
    return {'host_pipeline': scaling,
            'host_pipeline_headroom': host_pipeline.headroom(scaling['examples_per_s_per_busy_core'], consumption)}


SECTIONS = {
    'input_pipeline': (_input_pipelines, False),
    'host_pipeline': (_host_pipeline, False),
}
