"""The OT pairing off the device (wraps benchmarks/pairing.py).

Sections: `while_loops` (data-dependent loops in the device programs, per placement),
`hungarian_iterations` (loop iterations of one exact matching), `host_pairing` (noise + exact OT
on the host, 1 and k threads) and `headroom` (host pairing rate / what an accelerator host consumes).
"""
from __future__ import annotations

import os

import pairing
from common import analytic_forward_flops

from configs import celebahq256, default


def _headroom(r, mesh, quick):
    config = celebahq256.get_config()
    per_example = 4 * analytic_forward_flops(config, 1)
    measured = r['host_pairing']
    most = max(v['threads'] for k, v in measured.items() if k.endswith('_threads'))
    per_core = measured[f'{most}_threads']['examples_per_s'] / min(most, os.cpu_count() or 1)
    return {'host_pairing_headroom': pairing.headroom(per_example, per_core)}


SECTIONS = {
    'while_loops': (lambda r, mesh, q: {'device_program_while_loops':
                                        pairing.device_program_while_loops(default.get_config(), mesh)}, False),
    'hungarian_iterations': (lambda r, mesh, q: {'hungarian_iterations': pairing.hungarian_iterations()}, False),
    'host_pairing': (lambda r, mesh, q: {'host_pairing': pairing.host_pairing(threads=(1, os.cpu_count() or 1))},
                     False),
    'headroom': (_headroom, False),
}
