"""What a training process needs around the loop: the multi-process start, the metrics log, the
SIGTERM / SIGINT stop flag, the device prefetch of input batches, and duration formatting for
progress lines.

Only process 0 writes logs; :class:`StopSignal` makes every process stop after the same step.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal

import jax
import numpy as np

log = logging.getLogger("ssd_jax.runtime")


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
                           initialization_timeout: int = 300) -> bool:
    """Starts JAX's multi-process runtime when this process is one of several; True if it did.

    Explicit arguments win (``coordinator_address`` is ``host:port`` of process 0); otherwise
    JAX's own cluster detection runs when a launcher's environment is present (TPU VM pods,
    SLURM with several tasks, Open MPI). A single plain process (a laptop, one Colab runtime)
    does nothing. Must run before anything touches a JAX backend (``jax.devices()``, an array).

    On CPU the processes' devices talk through gloo over TCP (JAX's default CPU collectives,
    set explicitly here); give each process several CPU devices with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``. A loopback coordinator address
    (127.0.0.1, localhost) also binds the coordinator to loopback only.
    """
    if jax.distributed.is_initialized():
        return True
    explicit = bool(coordinator_address) or num_processes > 1
    launcher = (int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
                or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0)
    if not (explicit or launcher):
        return False
    if jax.config.jax_cpu_collectives_implementation is None:  # read when the CPU backend starts
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not explicit:
        jax.distributed.initialize(initialization_timeout=initialization_timeout)
        return True
    host = coordinator_address.rsplit(":", 1)[0] if coordinator_address else ""
    loopback = host in ("127.0.0.1", "localhost", "[::1]")
    jax.distributed.initialize(coordinator_address=coordinator_address or None,
                               num_processes=num_processes or None,
                               process_id=process_id if process_id >= 0 else None,
                               initialization_timeout=initialization_timeout,
                               coordinator_bind_address=coordinator_address if loopback else None)
    return True


class MetricsLog:
    """JSON lines plus TensorBoard events in the workdir (process 0 only)."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it at write time)
                import tensorflow as tf
                self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
            except Exception as e:  # TensorBoard is optional; the JSON lines are the record
                log.warning("TensorBoard events disabled: %s", e)

    def write(self, step: int, split: str, metrics: dict):
        """Appends the finite scalars of ``metrics`` as one JSON line, and as ``split/name`` events."""
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in metrics.items() if _finite_number(v)}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
        if self._tb is not None:
            import tensorflow as tf
            with self._tb.as_default(step=step):
                for k, v in scalars.items():
                    tf.summary.scalar(f"{split}/{k}", v)
            self._tb.flush()


def _finite_number(v) -> bool:
    """True for a finite scalar (Python, NumPy or 0-d array); False for curves, strings, NaN."""
    scalar = isinstance(v, (int, float, np.number)) or (isinstance(v, (np.ndarray, jax.Array)) and v.ndim == 0)
    return scalar and bool(np.isfinite(float(v)))


class DevicePrefetch:
    """Iterator of device batches: the host batches of ``batches`` placed ``depth`` steps ahead.

    Each host batch (a dict of NumPy arrays holding this process's rows) becomes a dict of global
    ``jax.Array`` sharded by ``sharding`` (``jax.make_array_from_process_local_data``: each process
    feeds only its own rows). When batch ``n`` is handed out, batches ``n + 1 .. n + depth`` have
    already been read from ``batches`` and their host-to-device copies issued; on GPU and TPU
    those copies are asynchronous, so they overlap the steps still running on the devices. This
    is the jit / sharding form of ``flax.jax_utils.prefetch_to_device`` (which is for ``pmap``).
    The order of batches is the order of ``batches``; up to ``depth`` batches more than are
    handed out are read from it.
    """

    def __init__(self, batches, sharding: jax.sharding.Sharding, depth: int = 2):
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self._batches, self._sharding, self._depth = iter(batches), sharding, depth
        self._queue: collections.deque = collections.deque()
        self._exhausted = False

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        while not self._exhausted and len(self._queue) <= self._depth:
            try:
                batch = next(self._batches)
            except StopIteration:
                self._exhausted = True
                break
            self._queue.append({k: jax.make_array_from_process_local_data(self._sharding, v)
                                for k, v in batch.items()})
        if not self._queue:
            raise StopIteration
        return self._queue.popleft()


def format_duration(seconds: float) -> str:
    """``"1h05m"`` from an hour on, else ``"3m07s"``; negative durations read as zero."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step, with :meth:`poll`.

    Preemptible VMs send SIGTERM some seconds before they stop: the loop finishes its step,
    saves and exits. With several processes, :meth:`poll` is a collective (an all-gather of
    each process's signal number, every step) so that all processes stop after the same step
    even when the signal reaches them at different times; it must be called by every process
    at every step. (This is what orbax's ``reached_preemption`` offers through JAX's preemption
    service, but that sees SIGTERM only and needs ``jax.distributed``; polling covers SIGINT and
    single-process runs the same way.)
    """

    def __init__(self):
        self.received = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread (e.g. a notebook worker): no handler
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signal.Signals(signum).name

    def poll(self) -> str | None:
        """The name of the signal that stops the run (received by any process), or None."""
        if jax.process_count() == 1:
            return self.received
        from jax.experimental import multihost_utils
        local = int(signal.Signals[self.received]) if self.received else 0
        agreed = int(np.max(multihost_utils.process_allgather(np.int32(local))))
        return signal.Signals(agreed).name if agreed else None

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

