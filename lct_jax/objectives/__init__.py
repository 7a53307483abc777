"""The training objectives, one file per method behind one interface (base.py).

    OBJECTIVES[config.objective].from_config(config)

is how a run gets its objective (builders.build_objective). A new method is a file here with
an `Objective` subclass, and one entry below.
"""
from lct_jax.objectives.base import Batch, Objective
from lct_jax.objectives.imf import IMFObjective
from lct_jax.objectives.ldm import DiffusionObjective
from lct_jax.objectives.meanflow import MeanFlowObjective
from lct_jax.objectives.sct import SCT
from lct_jax.objectives.slct import SLCT

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (SLCT, DiffusionObjective, MeanFlowObjective, SCT, IMFObjective)}

__all__ = ['Batch', 'Objective', 'OBJECTIVES', 'SLCT', 'DiffusionObjective', 'MeanFlowObjective', 'SCT', 'IMFObjective']
