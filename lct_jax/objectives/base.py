"""What every training objective is: the interface the train step, the samplers and the
configs rely on, and the one batch type it trains on.

An objective is a frozen dataclass of hyper-parameters with one method, `loss`, that the train
step differentiates. Everything the rest of the package needs to know about it is declared here
as class attributes, not discovered with `getattr`:

    name            the config's `objective` value ('slct', 'ldm', 'meanflow', ...)
    config_section  the config section whose keys are its fields (config.consistency, ...)
    samplers        the sampler families (lct_jax/sampling) that can draw from its network
    metric_names    the metrics `loss` returns besides 'loss' (each logged every log step)

`from_config(config)` builds it as `Cls(**config.<section>, **cls.run_fields(config))`: the
section's keys are the dataclass's fields, and `run_fields` adds what lives elsewhere in the
config (the run's total steps, the shared EDM parameterisation, the number of classes). A new
method is one file with one such class and one entry in `objectives.OBJECTIVES`.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp


class Batch(NamedTuple):
    """One global batch, every field sharded on the mesh's 'data' axis.

    x         the normalised data (B, H, W, C)
    z         its unit Gaussian noise, already OT-paired to x (the host's input pipeline or the
              device's `pair_noise` program drew and paired it; identity pairing for the
              objectives that use none)
    ot_ratio  (B,) each row's device's pair-cost ratio (paired / unpaired; 1 without pairing)
    labels    (B,) int32 class labels of a class-conditional model, else None
    """
    x: jax.Array
    z: jax.Array
    ot_ratio: jax.Array
    labels: Any = None


class Objective:
    """The interface (a base class of frozen dataclasses): see the module docstring."""
    name: ClassVar[str]
    config_section: ClassVar[str]
    samplers: ClassVar[tuple[str, ...]]
    metric_names: ClassVar[tuple[str, ...]]

    @classmethod
    def run_fields(cls, config) -> dict:
        """Fields the objective takes from outside its config section (default: none)."""
        del config
        return {}

    @classmethod
    def check_config(cls, config) -> None:
        """Refuse a config the objective cannot train (e.g. a network it cannot drive), before
        anything is written: a ValueError naming the setting. Default: nothing to check."""
        del config

    @classmethod
    def from_config(cls, config) -> 'Objective':
        cls.check_config(config)
        section = config[cls.config_section]
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
        return cls(**fields, **cls.run_fields(config))

    def loss(self, params, model, batch: Batch, key, step) -> tuple[jax.Array, dict]:
        """(scalar loss, {metric: scalar}) of one batch; differentiated with respect to `params`.
        `model` is the Flax module; `key` the step's loss key (fold_in(seed, step)); `step` the
        traced train step, from which every schedule of the objective is computed."""
        raise NotImplementedError


def network(model, labels=None):
    """model.apply, with the batch's class labels for a class-conditional model (the network
    drops them to the null class itself, with its 'dropout' rng, for classifier-free guidance)."""
    return model.apply if labels is None else functools.partial(model.apply, labels=labels)


class JVPInFloat32:
    """Mixed into the objectives whose loss takes a JVP (MeanFlow, sCT, iMF): their network runs in
    float32 whatever model.dtype, since the JVP and the targets are differences of nearly equal
    quantities (MeanFlow's users' NaN reports came from bf16 JVPs)."""

    def network_apply(self, model):
        """The apply function the loss runs: the model in float32."""
        return model.clone(dtype=jnp.float32).apply
