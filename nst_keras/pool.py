"""One worker pool on Ray: a function and items in, records out.

``run(function, items, ...)`` calls ``function(state, item)`` for every item
on Ray workers and yields ``Done(item, record, attempts)`` as each call ends.
Batch items (``nst_keras.batch``) and film chunks (``nst_keras.video``) both
run through it.  The model:

* a worker is a Ray actor: one process that keeps ``state`` (what
  ``setup()`` returned when it started, e.g. a cache of style targets) from
  call to call and runs one call at a time.  It is pinned to one GPU when the
  cluster has GPUs (Ray sets its ``CUDA_VISIBLE_DEVICES``), or on CPUs gets
  its share of the cores as TensorFlow intra-op threads (not pinned to
  cores: the kernel moves a worker off a core that something else is busy
  on, which pinning forbids);
* the driver sends each call only its function, settings and item; the
  worker reads and writes the shared filesystem itself;
* when a worker dies (killed, out of memory, its node lost) a new one is
  started and its item goes back to the front of the queue, up to
  ``max_retries`` times; after that ``on_lost`` says what the item's record
  is (default: ``UserError``, the run ends);
* Ctrl-C cancels the running calls (``cancelled()`` turns true inside them,
  so they can save and stop), waits for them, and yields ``on_interrupt``'s
  record for each.

Ray is imported only when a pool runs (``require`` says in one line what to
install when it is missing).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib.util
import math
import os
import socket
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from nst_keras.engine import hardware
from nst_keras.errors import UserError

RAY_MISSING = ("--workers and --ray_address need Ray; install it with "
               "pip install 'nst_keras[ray]' (or pip install ray)")
LOCAL_OBJECT_STORE = 200 * 1024 * 1024  # records and settings are all it holds
INTERRUPT_WAIT_S = 60.0
# Workers not started after this long cannot be placed (no node has what each
# needs) or cannot start: the batch ends with one line instead of waiting forever.
START_WAIT_S = 300.0


def require() -> None:
    """``UserError`` naming the install command when Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise UserError(RAY_MISSING)


@dataclasses.dataclass
class Done:
    """One ended call: the item, what ``function`` (or ``on_lost``...) returned,
    and how many times it was started."""

    item: object
    record: object
    attempts: int = 1


# --------------------------------------------------------------------------
# Workers


def _start_tensorflow() -> None:
    import tensorflow as tf  # late: the worker's TensorFlow, after its thread settings

    tf.constant(0.0).numpy()


class _Worker:
    """The body of a Ray worker (made a Ray actor by ``_actor_class``)."""

    def __init__(self, threads: int = 0, setup: Optional[Callable] = None):
        import ray  # late: only inside Ray workers

        from nst_keras import cli  # late: cli defines flags; workers need only its quiet import

        cli.import_tensorflow_quietly()
        if threads:
            hardware.configure_threads(threads)
            _start_tensorflow()  # fixes the thread pools before any call resets them
        self.state = setup() if setup is not None else None
        self.node = ray.get_runtime_context().get_node_id()
        self.label = f"{worker_label()}/{self.node[:8]}"

    def info(self) -> Dict:
        return {"pid": os.getpid(), "node": self.node, "worker": self.label}

    def call(self, function, item):
        """``function(state, item)`` in this worker (a module-level function)."""
        return function(self.state, item)


@functools.lru_cache(maxsize=None)
def _actor_class():
    import ray  # late: Ray is optional

    return ray.remote(max_restarts=0, max_task_retries=0)(_Worker)


def worker_label() -> str:
    """``host:pid`` of this process (what records name as their worker)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def current_node() -> str:
    """The Ray node id of the worker running this call."""
    import ray  # late: called inside Ray workers only

    return ray.get_runtime_context().get_node_id()


def current_worker() -> str:
    """The label of the Ray worker running this call (``host:pid/node``)."""
    return f"{worker_label()}/{current_node()[:8]}"


def cancelled() -> bool:
    """Inside a call: whether the driver cancelled it (Ctrl-C); save and stop."""
    import ray  # late: called inside Ray workers only

    context = ray.get_runtime_context()
    return bool(hasattr(context, "is_canceled") and context.is_canceled())


# --------------------------------------------------------------------------
# The cluster


def check_address(address: str) -> None:
    """``UserError`` at once when HOST:PORT does not answer (Ray would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at --ray_address={address} "
                        f"({e.strerror or e}); start it with ray start --head or fix the "
                        "address") from None


def connect(workers: int, address: Optional[str]) -> bool:
    """Starts a local Ray runtime or joins ``address``; True when started here."""
    import ray  # late: Ray is optional

    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=True)
    if address:
        check_address(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot reach the Ray cluster at --ray_address={address} "
                            f"({str(e).splitlines()[0]}); start it with ray start --head "
                            "or fix the address") from None
        return True
    ray.init(address="local", num_cpus=hardware.usable_cores(),
             object_store_memory=LOCAL_OBJECT_STORE,
             _node_ip_address="127.0.0.1", **quiet)
    return True


def plan(resources: Dict, nodes: int, workers: int) -> List[Dict]:
    """Ray options and TensorFlow threads of each worker.

    Args:
      resources: the cluster's ``{"CPU": n, "GPU": m, ...}``.
      nodes: alive nodes; ``workers`` 0 means one per GPU, or one per node.

    Returns:
      One ``{"options", "threads"}`` per worker: on GPUs one GPU each (Ray
      sets its ``CUDA_VISIBLE_DEVICES``) and TensorFlow's own threads; on CPUs
      an equal share of the CPUs as intra-op threads.
    """
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if gpus:
        count = workers or gpus
        return [{"options": {"num_gpus": 1, "num_cpus": min(1.0, cpus / count)},
                 "threads": 0} for _ in range(count)]
    count = workers or max(1, nodes)
    share = cpus / count
    return [{"options": {"num_cpus": share}, "threads": max(1, math.floor(share))}
            for _ in range(count)]


def plan_workers(workers: int) -> List[Dict]:
    """The plans of this cluster's workers (``plan``, from Ray's resources and nodes)."""
    import ray  # late: Ray is optional

    alive = len([n for n in ray.nodes() if n.get("Alive")])
    return plan(ray.cluster_resources(), alive, workers)


# --------------------------------------------------------------------------
# The pool


def _lost(item, reason: str, attempts: int):
    raise UserError(f"a Ray worker died ({reason}); what it saved is kept: run the same "
                    "command again to go on")


def _failed(item, reason: str, attempts: int):
    raise UserError(f"{item!r} failed on its Ray worker: {reason}")


class Pool:
    """The workers, the queue of items and the calls in flight."""

    def __init__(self, function, plans: Sequence[Dict], setup, max_retries: int, log,
                 on_lost: Callable, on_error: Callable):
        self.function, self.setup, self.log = function, setup, log
        self.max_retries, self.on_lost, self.on_error = max_retries, on_lost, on_error
        self.infos: Dict = {}  # worker -> object ref of its info()
        self.plans: Dict = {}  # worker -> its plan (a replacement takes the same)
        self.idle = [self.start_worker(p) for p in plans]
        self.starting: Dict = {}  # info ref -> a replacement worker not yet started
        self.running: Dict = {}  # object ref -> (worker, item)
        self.queue: collections.deque = collections.deque()
        self.attempts: collections.Counter = collections.Counter()

    def start_worker(self, plan: Dict):
        worker = _actor_class().options(**plan["options"]).remote(plan["threads"],
                                                                 self.setup)
        self.infos[worker] = worker.info.remote()
        self.plans[worker] = plan
        return worker

    def dispatch(self) -> None:
        """Hands queued items to idle workers.  A replacement is idle once it has
        started, or at once when no other worker is left: a retried item goes to
        whichever worker is free first, not behind a cold start."""
        import ray  # late: Ray is optional

        if self.starting:
            refs = list(self.starting)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            self.idle[:0] = [self.starting.pop(ref) for ref in ready]
        self._hand_out()
        if self.queue and self.starting and not self.running:
            self.idle[:0] = list(self.starting.values())
            self.starting.clear()
            self._hand_out()

    def _hand_out(self) -> None:
        while self.queue and self.idle:
            worker, (index, item) = self.idle.pop(), self.queue.popleft()
            self.attempts[index] += 1
            self.running[worker.call.remote(self.function, item)] = (worker, index, item)

    def collect(self, ref) -> Optional[Done]:
        """The ended call's ``Done``, or ``None`` when its item was requeued."""
        import ray  # late: Ray is optional

        worker, index, item = self.running.pop(ref)
        attempts = self.attempts[index]
        try:
            record = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            self.idle.append(worker)
            return None
        except _worker_deaths() as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            replacement = self.start_worker(self.plans.pop(worker))
            self.starting[self.infos[replacement]] = replacement
            if attempts <= self.max_retries:
                self.log(f"worker died running {getattr(item, 'name', index)} "
                         f"({type(e).__name__}); retrying it from its last checkpoint")
                self.queue.appendleft((index, item))
                return None
            return Done(item, self.on_lost(item, f"{type(e).__name__}: {why}", attempts),
                        attempts)
        except ray.exceptions.RayError as e:
            self.idle.append(worker)
            text = str(getattr(e, "cause", None) or e).strip().splitlines()
            return Done(item, self.on_error(item, text[0][:200] if text else
                                            type(e).__name__, attempts), attempts)
        self.idle.append(worker)
        return Done(item, record, attempts)

    def interrupt(self, on_interrupt: Optional[Callable]) -> Iterator[Done]:
        """Cancels the running calls, waits for them to stop; their records."""
        import ray  # late: Ray is optional

        busy = list(self.running.values())
        for ref in self.running:
            ray.cancel(ref)
        ray.wait([w.info.remote() for w, _, _ in busy], num_returns=len(busy),
                 timeout=INTERRUPT_WAIT_S)
        if on_interrupt is None:
            raise KeyboardInterrupt
        for _, index, item in busy:
            yield Done(item, on_interrupt(item), self.attempts[index])


@functools.lru_cache(maxsize=None)
def _worker_deaths() -> tuple:
    import ray  # late: Ray is optional

    return tuple(getattr(ray.exceptions, name) for name in (
        "RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError",
        "LocalRayletDiedError") if hasattr(ray.exceptions, name))


def _started(ray, pool: Pool, plans: Sequence[Dict]) -> List[Dict]:
    """The workers' ``info()`` once all have started; ``UserError`` after ``START_WAIT_S``."""
    refs = list(pool.infos.values())
    ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=START_WAIT_S)
    if waiting:
        free = {k: v for k, v in ray.available_resources().items()
                if k in ("CPU", "GPU") or not k.startswith(("node:", "memory",
                                                            "object_store"))}
        raise UserError(f"{len(waiting)} of {len(refs)} Ray worker(s) did not start within "
                        f"{START_WAIT_S:g} s (each asks for {plans[0]['options']}; the "
                        f"cluster has {free} free): lower --workers or add nodes")
    return ray.get(ready)


def run(function: Callable, items: Sequence, *, workers: int = 0,
        address: Optional[str] = None, setup: Optional[Callable] = None,
        max_retries: int = 0, log: Callable = print, on_lost: Callable = _lost,
        on_error: Callable = _failed,
        on_interrupt: Optional[Callable] = None) -> Iterator[Done]:
    """``function(state, item)`` for every item on Ray workers; yields each ``Done``.

    Args:
      function, setup: module-level functions (Ray sends them by name);
        ``setup()`` runs once per worker and gives its ``state``.
      workers: how many (0: one per GPU, or one per node); ``address``: an
        existing Ray cluster (HOST:PORT or auto), else a local runtime.
      max_retries: times an item whose worker died is started again.
      on_lost(item, reason, attempts), on_error(item, reason, attempts): the
        record of an item whose worker died too often, or whose call raised
        (default: ``UserError``).
      on_interrupt(item): the record of a call stopped by Ctrl-C (default:
        ``KeyboardInterrupt`` goes on up once the calls have stopped).
    """
    require()
    import ray  # late: Ray is optional

    started = connect(workers, address)
    try:
        plans = plan_workers(workers)
        log(f"ray: {len(plans)} worker(s) on {len(ray.nodes())} node(s), "
            f"{plans[0]['options']}, {plans[0]['threads'] or 'default'} thread(s) each")
        pool = Pool(function, plans, setup, max_retries, log, on_lost, on_error)
        for info in _started(ray, pool, plans):
            log(f"ray worker {info['worker']} (pid {info['pid']}) ready")
        pool.queue.extend(enumerate(items))
        try:
            while pool.queue or pool.running:
                pool.dispatch()
                # A short timeout lets Python see Ctrl-C between waits.
                done, _ = ray.wait(list(pool.running) + list(pool.starting),
                                   num_returns=1, timeout=0.5)
                for ref in (r for r in done if r in pool.running):
                    ended = pool.collect(ref)
                    if ended is not None:
                        yield ended
        except KeyboardInterrupt:
            log("stopping: asking the running calls to save a checkpoint")
            yield from pool.interrupt(on_interrupt)
    finally:
        if started:
            ray.shutdown()
