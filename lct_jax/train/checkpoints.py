"""Orbax checkpoints in <workdir>/checkpoints/<step>/: save, keep policy, restore.

Saves are atomic (Orbax writes a temporary directory and renames it when
complete), so an interrupted or failed save never replaces the previous
checkpoint. We keep the last `keep` checkpoints plus every `keep_period`-th.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


def make_manager(workdir: str, keep: int = 3, keep_period: int | None = None,
                 async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_period or None, create=True,
        enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                 options=options)


def _save_failed(manager, what: str, e: Exception) -> CheckpointError:
    return CheckpointError(f'{what} failed ({type(e).__name__}: {e}); the previous checkpoint '
                           f'({manager.latest_step()}) in {manager.directory} is intact')


def save(manager: ocp.CheckpointManager, step: int, state, force: bool = False) -> bool:
    """Start saving `step` (asynchronously); an error of an earlier async save surfaces here."""
    try:
        return manager.save(step, args=ocp.args.StandardSave(state), force=force)
    except Exception as e:  # noqa: BLE001 - e.g. the disk is full; Orbax wraps OSErrors variously
        raise _save_failed(manager, f'saving the checkpoint of step {step}', e) from e


def wait(manager: ocp.CheckpointManager) -> None:
    """Block until pending saves are committed, turning their failures into a CheckpointError."""
    try:
        manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
        raise _save_failed(manager, 'finishing a checkpoint save', e) from e


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a state, the restore target."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, 'sharding', None)), state)


def restore_latest(manager: ocp.CheckpointManager, target, fallback: bool = False):
    """(state, step) from the newest checkpoint, or (target, None) if there is none.

    A checkpoint that cannot be read is an error naming it; with `fallback`
    the older checkpoints are tried in turn instead (newest first).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    errors = []
    for step in steps:
        try:
            return restore(manager, step, target), step
        except CheckpointError as e:
            if not fallback:
                raise CheckpointError(f'{e}\nTo resume from an older checkpoint instead, pass '
                                      f'--config.train.restore_fallback=True (checkpoints: {sorted(steps)})') from e
            errors.append(str(e))
            print(f'warning: {e}; trying an older checkpoint', flush=True)
    if errors:
        raise CheckpointError('no checkpoint could be restored:\n' + '\n'.join(errors))
    return target, None


def load_numpy(step_dir: str) -> dict:
    """A checkpoint as host numpy arrays, whatever devices or processes wrote it.

    For sampling and evaluation on another layout than training's (Orbax's
    default restore insists on the saving topology).
    """
    import numpy as np
    path = os.path.join(os.path.abspath(step_dir), 'default')
    if not os.path.isdir(path):
        raise CheckpointError(f'no checkpoint at {step_dir} (expected {path})')
    checkpointer = ocp.PyTreeCheckpointer()
    meta = checkpointer.metadata(path)
    tree = getattr(meta, 'item_metadata', meta)
    tree = getattr(tree, 'tree', tree)
    args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree,
                                  is_leaf=lambda x: hasattr(x, 'shape'))
    try:
        return checkpointer.restore(path, restore_args=args)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f'cannot read the checkpoint at {step_dir}: {type(e).__name__}: {e}') from e


def restore(manager: ocp.CheckpointManager, step: int, target):
    """Restore `step` into the structure, dtypes and shardings of `target`."""
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract_like(target)))
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; say what and where
        path = os.path.join(str(manager.directory), str(step))
        raise CheckpointError(f'cannot restore the checkpoint at {path}: {type(e).__name__}: {e}') from e
