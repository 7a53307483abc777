"""Where metrics go: TensorBoard event files and <workdir>/metrics.jsonl (process 0 only)."""
from __future__ import annotations

import json
import os

import jax
import numpy as np


class MetricWriter:
    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._jsonl = None
        if self.enabled:
            from tensorboardX import SummaryWriter
            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
            self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

    def scalars(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in metrics.items()}
        for k, v in clean.items():
            self._tb.add_scalar(k, v, step)
        self._jsonl.write(json.dumps({'step': int(step), **clean}) + '\n')
        self._jsonl.flush()

    def image(self, step: int, tag: str, image_hwc: np.ndarray) -> None:
        if self.enabled:
            self._tb.add_image(tag, image_hwc, step, dataformats='HWC')

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
