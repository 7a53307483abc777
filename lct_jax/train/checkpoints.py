"""Orbax checkpoints in <workdir>/checkpoints/<step>/: save, keep policy, restore.

Saves are atomic (Orbax writes a temporary directory and renames it when
complete), so an interrupted or failed save never replaces the previous
checkpoint. We keep the last `keep` checkpoints plus every `keep_period`-th.

Sealed: once a save is complete, the sha256 of every file of its step directory
goes into <step>/lct_sha256.json, and every restore checks them first. Why: Orbax's
array files carry no checksum, so a flipped byte in one was read back as other
weights without a word (the fuzz harness, tests/fuzz, found it); now it is an error
naming the file. A checkpoint without the file (written before it existed) is read
unchecked.
"""
from __future__ import annotations

import hashlib
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from lct_jax import writer
from lct_jax.untrusted import UnreadableFileError, read_json


class CheckpointError(RuntimeError):
    pass


class CheckpointMismatchError(CheckpointError):
    """The checkpoint does not fit the config (other shapes or keys): names them; no older one would fit."""


def make_manager(workdir: str, keep: int = 3, keep_period: int | None = None,
                 async_save: bool = True, protected=None) -> ocp.CheckpointManager:
    """protected: a function giving the steps never to delete (the best checkpoints of the
    in-training evaluation, lct_jax/evaluation/during_training.py), asked at each clean-up."""
    if protected is None:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, keep_period=keep_period or None, create=True,
            enable_async_checkpointing=async_save)
    else:
        policies = [ocp.checkpoint_managers.LatestN(n=keep), _Protected(protected)]
        if keep_period:
            policies.append(ocp.checkpoint_managers.EveryNSteps(keep_period))
        options = ocp.CheckpointManagerOptions(
            create=True, enable_async_checkpointing=async_save,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies))
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                 options=options)


class _Protected:
    """An Orbax preservation policy: keep the steps `steps()` names (read at every clean-up)."""

    def __init__(self, steps):
        self.steps = steps

    def should_preserve(self, checkpoints, *, context=None):
        keep = self.steps()
        return [c.step in keep for c in checkpoints]


def _save_failed(manager, what: str, e: Exception) -> CheckpointError:
    return CheckpointError(f'{what} failed ({type(e).__name__}: {e}); the previous checkpoint '
                           f'({manager.latest_step()}) in {manager.directory} is intact')


class NonFiniteCheckpointError(CheckpointError):
    """A state with non-finite parameters, EMAs or optimizer moments: never written."""


@jax.jit
def _state_is_finite(state) -> jax.Array:
    leaves = [x for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def save(manager: ocp.CheckpointManager, step: int, state, force: bool = False) -> bool:
    """Start saving `step` (asynchronously); an error of an earlier async save surfaces here.
    A state holding a non-finite number is refused (NonFiniteCheckpointError): the train step
    never writes one (train/step.py), so this guards a restored or hand-made state, and a
    checkpoint a later start would resume from is always finite."""
    if not bool(_state_is_finite(state)):
        raise NonFiniteCheckpointError(
            f'the state at step {step} holds a non-finite parameter, EMA or optimizer moment; not written to '
            f'{manager.directory} (the latest checkpoint, {manager.latest_step()}, is intact)')
    try:
        saved = manager.save(step, args=ocp.args.StandardSave(state), force=force)
    except Exception as e:  # noqa: BLE001 - e.g. the disk is full; Orbax wraps OSErrors variously
        raise _save_failed(manager, f'saving the checkpoint of step {step}', e) from e
    seal_finished(manager, skip=step)  # the earlier saves are complete once a new one has started
    return saved


def wait(manager: ocp.CheckpointManager) -> None:
    """Block until pending saves are committed, turning their failures into a CheckpointError."""
    try:
        manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
        raise _save_failed(manager, 'finishing a checkpoint save', e) from e
    seal_finished(manager)


# --- seals: the checksums of a complete checkpoint's files ---------------------

SEAL_FILE = 'lct_sha256.json'


def _file_digests(step_dir: str) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(step_dir):
        for f in files:
            path = os.path.join(d, f)
            rel = os.path.relpath(path, step_dir)
            if rel.startswith(SEAL_FILE):  # the seal itself, and its temporary file while it is written
                continue
            h = hashlib.sha256()
            with open(path, 'rb') as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b''):
                    h.update(chunk)
            out[rel] = h.hexdigest()
    return out


def seal(step_dir: str) -> None:
    """Write the digests of a complete step directory's files (process 0 only)."""
    if jax.process_index() != 0:
        return
    writer.write_json(os.path.join(step_dir, SEAL_FILE), _file_digests(step_dir), indent=0, sort_keys=True)


def seal_finished(manager: ocp.CheckpointManager, skip: int | None = None) -> None:
    for step in manager.all_steps():
        step_dir = os.path.join(str(manager.directory), str(step))
        if step != skip and os.path.isdir(step_dir) and not os.path.exists(os.path.join(step_dir, SEAL_FILE)):
            seal(step_dir)


def verify_seal(step_dir: str) -> None:
    """CheckpointError naming every file of `step_dir` that is not as it was saved; nothing if unsealed."""
    path = os.path.join(step_dir, SEAL_FILE)
    if not os.path.exists(path):
        return
    try:
        sealed = read_json(path, "a checkpoint's file checksums", expect=dict)
    except UnreadableFileError as e:
        raise CheckpointError(str(e)) from None
    now = _file_digests(step_dir)
    wrong = sorted(os.path.join(step_dir, k) for k in set(sealed) | set(now) if sealed.get(k) != now.get(k))
    if wrong:
        raise CheckpointError(f'the checkpoint at {step_dir} is damaged: {len(wrong)} file(s) differ from '
                              f'what was saved (their sha256 in {path}): {", ".join(wrong[:4])}'
                              + (' ...' if len(wrong) > 4 else ''))


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a state, the restore target."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, 'sharding', None)), state)


def restore_latest(manager: ocp.CheckpointManager, target, fallback: bool = False):
    """(state, step) from the newest checkpoint, or (target, None) if there is none.

    A checkpoint that cannot be read is an error naming it; with `fallback`
    the older checkpoints are tried in turn instead (newest first). A
    checkpoint that does not fit `target` is an error at once (no older one
    would fit either). On every error the manager is closed first.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    errors = []
    for step in steps:
        try:
            return restore(manager, step, target), step
        except CheckpointMismatchError:
            close(manager)
            raise
        except CheckpointError as e:
            if not fallback:
                close(manager)
                raise CheckpointError(f'{e}\nTo resume from an older checkpoint instead, pass '
                                      f'--config.train.restore_fallback=True (checkpoints: {sorted(steps)})') from e
            errors.append(str(e))
            print(f'warning: {e}; trying an older checkpoint', flush=True)
    if errors:
        close(manager)
        raise CheckpointError('no checkpoint could be restored:\n' + '\n'.join(errors))
    return target, None


def latest_step_dir(workdir: str) -> str:
    """<workdir>/checkpoints/<newest step>; FileNotFoundError if there is none."""
    ckpt_dir = os.path.join(workdir, 'checkpoints')
    steps = sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) if os.path.isdir(ckpt_dir) else []
    if not steps:
        raise FileNotFoundError(f'no checkpoint in {ckpt_dir}; train first or pass --checkpoint')
    return os.path.join(ckpt_dir, str(steps[-1]))


def load_numpy(step_dir: str) -> dict:
    """A checkpoint as host numpy arrays, whatever devices or processes wrote it.

    For sampling and evaluation on another layout than training's (Orbax's
    default restore insists on the saving topology).
    """
    import numpy as np
    path = os.path.join(os.path.abspath(step_dir), 'default')
    if not os.path.isdir(path):
        raise CheckpointError(f'no checkpoint at {step_dir} (expected {path})')
    verify_seal(step_dir)
    from etils import epath
    try:
        checkpointer = ocp.PyTreeCheckpointer()
        # The handler's metadata, not the checkpointer's: that one warns that default/_CHECKPOINT_METADATA is
        # missing (the manager writes it one level up).
        meta = ocp.StandardCheckpointHandler().metadata(epath.Path(path))
        tree = getattr(meta, 'tree', meta)
        args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree,
                                      is_leaf=lambda x: hasattr(x, 'shape'))
        tree = checkpointer.restore(path, restore_args=args)
    except Exception as e:  # noqa: BLE001 - Orbax and tensorstore raise many kinds for damaged files
        raise CheckpointError(f'cannot read the checkpoint at {step_dir}: {type(e).__name__}: '
                              f'{str(e).splitlines()[0] if str(e) else ""}') from None
    if not isinstance(tree, dict) or not {'params', 'ema', 'step'} <= set(tree) or not isinstance(tree['ema'], dict):
        raise CheckpointError(f'the checkpoint at {step_dir} holds {sorted(tree) if isinstance(tree, dict) else tree!r:.80}, '
                              'not a training state (params, ema, step)')
    return tree


def restore(manager: ocp.CheckpointManager, step: int, target):
    """Restore `step` into the structure, dtypes and shardings of `target`.

    The shapes are compared first: Orbax's own error names no key, and its
    failed reads leave callbacks that print "Event loop is closed" at exit.
    """
    path = os.path.join(str(manager.directory), str(step))
    verify_seal(path)
    stored = stored_shapes(path)
    if stored is not None:
        problems = shape_mismatches(stored, flat_shapes(target))
        if problems:
            raise CheckpointMismatchError(f'the checkpoint at {path} does not fit the config (the model, '
                                          f'optimizer or EMA settings differ from the run that wrote it):\n'
                                          + problems)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract_like(target)))
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; say what and where
        raise CheckpointError(f'cannot restore the checkpoint at {path}: {type(e).__name__}: {e}') from e


def close(manager: ocp.CheckpointManager) -> None:
    """Stop Orbax's background threads now, so none of them writes noise after a real error."""
    try:
        manager.close()
    except Exception as e:  # noqa: BLE001 - the error being raised matters more than this one
        print(f'warning: closing the checkpoint manager: {type(e).__name__}: {e}', flush=True)


# --- does a checkpoint fit a config? -------------------------------------------

def key_name(key) -> str:
    """One path element of a pytree key path (dict key, attribute, index), as Orbax names it on disk."""
    for attr in ('key', 'name', 'idx'):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def flat_shapes(tree) -> dict[str, tuple]:
    """{'params/enc_8x8_conv/kernel': shape, ...} of a pytree of arrays (or of array metadata)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, 'shape'))
    return {'/'.join(key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves
            if hasattr(leaf, 'shape')}


def stored_shapes(step_dir: str) -> dict[str, tuple] | None:
    """The shapes a checkpoint holds, from its metadata; None if the metadata cannot be read
    (the restore itself then reports what is wrong)."""
    from etils import epath
    try:
        meta = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / 'default')
    except Exception:  # noqa: BLE001
        return None
    return flat_shapes(getattr(meta, 'tree', meta))


def shape_mismatches(stored: dict, wanted: dict, limit: int = 8) -> str:
    """'' if the two {path: shape} tables agree, else the differences, a few of each kind.

    The params' entries come first: the EMA and optimizer copies repeat them.
    """
    order = lambda k: (not k.startswith('params/'), k)  # noqa: E731
    wrong = [f'{k}: checkpoint {stored[k]}, config {wanted[k]}'
             for k in sorted(set(stored) & set(wanted), key=order) if tuple(stored[k]) != tuple(wanted[k])]
    missing = [f'{k} {wanted[k]}' for k in sorted(set(wanted) - set(stored), key=order)]
    extra = [f'{k} {stored[k]}' for k in sorted(set(stored) - set(wanted), key=order)]
    lines = []
    for title, items in (('wrong shapes', wrong), ('in the config but not in the checkpoint', missing),
                         ('in the checkpoint but not in the config', extra)):
        if items:
            lines.append(f'  {title} ({len(items)}): ' + '; '.join(items[:limit])
                         + (' ...' if len(items) > limit else ''))
    return '\n'.join(lines)
