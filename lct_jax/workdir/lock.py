"""One writer per work directory: `<workdir>/lock.json`, held by the running job.

The lock file names its holder (host, pid, job id, start time) and carries a
heartbeat that a background thread refreshes every `heartbeat_s` seconds. A
second launch reads it and refuses with a one-line error naming the holder.
A lock whose holder is gone is taken over, with a message:
  - same host and the pid is dead (or a zombie): at once;
  - otherwise (another host, or a pid we cannot judge): when the heartbeat
    is older than `stale_after_s` (default 120 s, far above the 15 s beat, so
    a busy or slow-filesystem job is not mistaken for a dead one).
Creation is atomic (O_CREAT | O_EXCL); a takeover is serialised by a second,
short-lived O_EXCL file so that two launches cannot both take over.

No JAX here: the caller decides which process holds the lock (process 0, on
behalf of all processes of a multi-host job).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import socket
import sys
import threading
import time
import uuid

from lct_jax import writer

LOCK_FILE = 'lock.json'
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0
# Environment variables that name the job on common schedulers, first found wins.
JOB_ID_VARIABLES = ('SLURM_JOB_ID', 'PBS_JOBID', 'LSB_JOBID', 'JOB_ID', 'KUBERNETES_POD_NAME', 'TPU_NAME')


class WorkdirLockedError(RuntimeError):
    """Another live job holds the work directory (one line, naming it)."""


def now_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec='seconds')


def job_id() -> str | None:
    return next((f'{v}={os.environ[v]}' for v in JOB_ID_VARIABLES if os.environ.get(v)), None)


def pid_is_alive(pid: int) -> bool:
    """On this host: does `pid` exist and is it not a zombie (killed, not yet reaped)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f'/proc/{pid}/stat') as f:
            # state is the field after the parenthesised command name, which may contain spaces
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True


CLOCK_SKEW_S = 86_400.0   # a heartbeat further in the future than this is not a time any clock wrote


def _heartbeat(holder: dict, now: float | None = None) -> float:
    """The holder's heartbeat time; 0 (long ago: stale) if the lock holds no time there: missing, not a
    number, NaN, Infinity, or a day or more in the future. A live lct_jax job always writes a finite
    time of its clock, so such a lock is damaged or made by hand, and it must not hold the
    directory for ever (a NaN once compared false with every limit)."""
    now = time.time() if now is None else now
    value = holder.get('heartbeat', 0)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and value <= now + CLOCK_SKEW_S)
    return float(value) if ok else 0.0


def describe_holder(holder: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = now - _heartbeat(holder, now)
    return (f'host {holder.get("host")}, pid {holder.get("pid")}, job {holder.get("job") or "-"}, '
            f'started {holder.get("started")}, last heartbeat {age:.0f} s ago')


def staleness(holder: dict, host: str, stale_after_s: float, now: float | None = None) -> str | None:
    """Why the holder is gone (a reason to print), or None if it may still be running."""
    now = time.time() if now is None else now
    if holder.get('host') == host and isinstance(holder.get('pid'), int) and not pid_is_alive(holder['pid']):
        return f'its process {holder["pid"]} on this host is dead'
    age = now - _heartbeat(holder, now)
    if age > stale_after_s:
        return f'no heartbeat for {age:.0f} s (> {stale_after_s:.0f} s)'
    return None


def read_holder(path: str) -> dict | None:
    """The lock's content; {} if it is unreadable (being written, or damaged: not JSON, not a JSON
    object); None if absent."""
    try:
        with open(path, 'rb') as f:
            holder = json.loads(f.read().decode('utf-8'))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return {}
    return holder if isinstance(holder, dict) else {}


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds the work directory for this job, or raises WorkdirLockedError."""

    def __init__(self, workdir: str, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S,
                 command: str | None = None, log=None):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.host = socket.gethostname()
        self.token = uuid.uuid4().hex  # tells our lock from a later holder's, whatever the pids
        self.command = command
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.lost = False  # set if someone took the lock over while we held it
        self._stop = threading.Event()
        self._thread = None
        self._started = None

    # --- acquiring ---------------------------------------------------------
    def acquire(self) -> 'WorkdirLock':
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        self._started = time.time()
        while not self._create():
            holder = self._read_existing()
            if holder is None:  # released between our two looks: try again
                continue
            reason = staleness(holder, self.host, self.stale_after_s)
            if reason is None:
                raise WorkdirLockedError(
                    f'{os.path.dirname(self.path)} is in use by another job ({describe_holder(holder)}); '
                    f'one writer per work directory (lock {self.path}; taken over once its process is dead '
                    f'or its heartbeat is older than {self.stale_after_s:.0f} s). If no job is writing there '
                    f'(a run copied from elsewhere, a host that is gone), delete {self.path} or pass '
                    '--lock_stale_seconds=0')
            self._take_over(holder, reason)
            break
        self._thread = threading.Thread(target=self._beat, name='workdir-lock-heartbeat', daemon=True)
        self._thread.start()
        return self

    def _read_existing(self) -> dict | None:
        holder = read_holder(self.path)
        if holder == {}:  # its creator may be writing it right now: look again once
            time.sleep(0.5)
            holder = read_holder(self.path)
        if holder == {}:  # damaged: judge it by the file's age
            try:
                holder = {'heartbeat': os.path.getmtime(self.path), 'host': '(unreadable lock file)'}
            except FileNotFoundError:
                return None
        return holder

    def _content(self) -> dict:
        return {'host': self.host, 'pid': os.getpid(), 'job': job_id(), 'started': now_iso(self._started),
                'heartbeat': time.time(), 'heartbeat_every_s': self.heartbeat_s,
                'stale_after_s': self.stale_after_s, 'command': self.command, 'token': self.token}

    def _create(self) -> bool:
        """Create the lock file atomically; False if it exists."""
        return writer.create_exclusive(self.path, json.dumps(self._content(), indent=1))

    def _take_over(self, stale: dict | None, reason: str) -> None:
        """Replace the lock `stale` (judged gone for `reason`) with ours, under a guard file."""
        guard = self.path + '.takeover'
        if not writer.create_exclusive(guard):
            # Another launch is taking over right now; a guard left by a crash expires.
            if time.time() - os.path.getmtime(guard) < self.stale_after_s:
                raise WorkdirLockedError(f'{os.path.dirname(self.path)}: another launch is taking over '
                                         f'the stale lock right now ({guard})') from None
            try:
                os.remove(guard)
            except FileNotFoundError:  # another launch removed it first
                pass
            return self._take_over(stale, reason)
        try:
            # Under the guard: the lock we judged stale must still be the same one.
            current = read_holder(self.path)
            if current is not None and stale and current.get('token') != stale.get('token'):
                raise WorkdirLockedError(f'{os.path.dirname(self.path)} was just taken by another job '
                                         f'({describe_holder(current)})')
            if current is not None:
                os.remove(self.path)
            if not self._create():
                raise WorkdirLockedError(f'{os.path.dirname(self.path)} was just taken by another job '
                                         f'({describe_holder(read_holder(self.path) or {})})')
        finally:
            os.remove(guard)
        if stale:
            self.log(f'taking over the lock {self.path} of a job that is gone ({reason}): '
                     f'{describe_holder(stale)}')

    # --- holding -----------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.refresh():
                return

    def refresh(self) -> bool:
        """Rewrite the heartbeat (atomically); False, with a warning, if the lock is no longer ours."""
        holder = read_holder(self.path)
        if not holder or holder.get('token') != self.token:
            self.lost = True
            self.log(f'WARNING: the lock {self.path} is no longer held by this job '
                     f'({"removed" if holder is None else describe_holder(holder)}); '
                     'another job may be writing to this work directory')
            return False
        try:
            writer.write_json(self.path, self._content())
        except OSError as e:  # e.g. a full disk: the run matters more; the next beat tries again
            self.log(f'WARNING: cannot refresh the heartbeat of {self.path}: {e}')
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = read_holder(self.path)
        if holder and holder.get('token') == self.token:
            os.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
