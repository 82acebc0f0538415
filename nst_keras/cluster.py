"""A batch's items on Ray workers (``--workers`` and ``--ray_address`` of ``nst_keras.batch``).

``nst_keras.batch`` loads this module only when one of those flags is
given, so Ray is needed only then.  The model:

* outputs live on a filesystem every worker sees (``--output_dir``); the
  driver sends each worker only the settings and an item (two paths and a
  name), the worker reads the pictures and writes the item's run directory
  itself, and returns its ``batch.jsonl`` record, which the driver writes;
* a worker is a Ray actor: one process that keeps the backbone and the
  style Gram targets (``batch.TargetCache``) from item to item, runs one item
  at a time, and is pinned to one GPU when the cluster has GPUs (Ray sets
  its ``CUDA_VISIBLE_DEVICES``), or on CPUs gets its share of the cores as
  TensorFlow intra-op threads (not pinned to cores: the kernel moves a
  worker off a core that something else is busy on, which pinning forbids);
* when a worker dies (killed, out of memory, its node lost) its item goes
  back to the front of the queue, a new worker is started, and the item
  continues from its last checkpoint on whichever worker takes it;
  finished items are never run again (``batch.item_config``).
"""

from __future__ import annotations

import collections
import math
import os
import socket
from typing import Dict, Iterator, List, Optional, Sequence

import ray

from nst_keras import batch, cli, hardware
from nst_keras.callbacks import Callback
from nst_keras.errors import UserError

LOCAL_OBJECT_STORE = 200 * 1024 * 1024  # records and settings are all it holds
WORKER_DEATHS = tuple(getattr(ray.exceptions, name) for name in (
    "RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError",
    "LocalRayletDiedError") if hasattr(ray.exceptions, name))
INTERRUPT_WAIT_S = 60.0


class StopOnCancel(Callback):
    """Turns ``ray.cancel`` of the running item into a clean stop with a checkpoint."""

    def on_step(self, progress) -> None:
        context = ray.get_runtime_context()
        if hasattr(context, "is_canceled") and context.is_canceled():
            progress.run.request_stop("SIGINT", "interrupted")


@ray.remote(max_restarts=0, max_task_retries=0)
class Worker:
    """One Ray worker process: runs items one at a time, caching what it can."""

    def __init__(self, threads: int = 0):
        cli.import_tensorflow_quietly()
        if threads:
            hardware.configure_threads(threads)
            _start_tensorflow()  # fixes the thread pools before any item resets them
        self.cache = batch.TargetCache()
        self.node = ray.get_runtime_context().get_node_id()
        self.label = f"{batch.worker_label()}/{self.node[:8]}"

    def info(self) -> Dict:
        return {"pid": os.getpid(), "node": self.node, "worker": self.label}

    def run(self, config, item: batch.Item, out_dir: str) -> Dict:
        record = batch.run_item(config, item, out_dir, self.cache, self.label,
                                callbacks=[StopOnCancel()])
        record["node"] = self.node
        return record

    def call(self, function, *args):
        """``function(*args)`` in this worker (a module-level function, sent by name)."""
        return function(*args)


def _start_tensorflow() -> None:
    import tensorflow as tf  # late: the worker's TensorFlow, after its thread settings

    tf.constant(0.0).numpy()


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


def plan_workers(workers: int) -> List[Dict]:
    """The plans of this cluster's workers (``plan``, from Ray's resources and nodes)."""
    alive = len([n for n in ray.nodes() if n.get("Alive")])
    return plan(ray.cluster_resources(), alive, workers)


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


class Pool:
    """The workers, the queue of items and the items in flight."""

    def __init__(self, plans: Sequence[Dict], config, out_dir: str, log):
        self.config, self.out_dir, self.log = config, out_dir, log
        self.infos: Dict = {}  # worker -> object ref of its info()
        self.plans: Dict = {}  # worker -> its plan (a replacement takes the same)
        self.idle = [self.start_worker(p) for p in plans]
        self.running: Dict = {}  # object ref -> (worker, item)
        self.queue: collections.deque = collections.deque()
        self.attempts: collections.Counter = collections.Counter()

    def start_worker(self, plan: Dict):
        worker = Worker.options(**plan["options"]).remote(plan["threads"])
        self.infos[worker] = worker.info.remote()
        self.plans[worker] = plan
        return worker

    def dispatch(self) -> None:
        while self.queue and self.idle:
            worker, item = self.idle.pop(), self.queue.popleft()
            self.attempts[item] += 1
            self.running[worker.run.remote(self.config, item, self.out_dir)] = (worker, item)

    def collect(self, ref, max_retries: int) -> Optional[Dict]:
        """The record of a finished call, or ``None`` when its item was requeued."""
        worker, item = self.running.pop(ref)
        try:
            record = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            self.idle.append(worker)
            return {**self._failed(item, "cancelled"), "status": "interrupted"}
        except WORKER_DEATHS as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.idle.append(self.start_worker(self.plans.pop(worker)))
            if self.attempts[item] <= max_retries:
                self.log(f"worker died running {item.name} ({type(e).__name__}); "
                         "retrying it from its last checkpoint")
                self.queue.appendleft(item)
                return None
            return self._failed(item, f"its worker died {self.attempts[item]} times; "
                                f"last: {type(e).__name__}: {why}")
        except ray.exceptions.RayError as e:
            self.idle.append(worker)
            return self._failed(item, f"{type(e).__name__}: {str(e).strip()[:200]}")
        self.idle.append(worker)
        record["attempts"] = self.attempts[item]
        return record

    def _failed(self, item, reason: str) -> Dict:
        return {"item": item.name, "content": item.content, "style": item.style,
                "status": "failed", "reason": reason, "seconds": 0.0,
                "attempts": self.attempts[item]}

    def interrupt(self) -> Iterator[Dict]:
        """Stops the running items with a checkpoint; yields their records.

        ``ray.cancel`` raises the flag ``StopOnCancel`` watches; a worker's
        next call (``info``) runs once its item has saved and stopped.
        """
        busy = list(self.running.values())
        for ref in self.running:
            ray.cancel(ref)
        ray.wait([w.info.remote() for w, _ in busy], num_returns=len(busy),
                 timeout=INTERRUPT_WAIT_S)
        for _, item in busy:
            info = batch.read_json(os.path.join(self.out_dir, item.name, "run.json"))
            yield {**self._failed(item, f"stopped at step {info.get('steps')}"),
                   "status": "interrupted" if info.get("status") != "finished" else "finished",
                   "steps": info.get("steps")}


def run_items(config, items: Sequence[batch.Item], out_dir: str, workers: int,
              address: Optional[str], max_retries: int, log) -> Iterator[Dict]:
    """Runs ``items`` on Ray workers; yields each record as its item ends."""
    started = connect(workers, address)
    try:
        plans = plan_workers(workers)
        log(f"ray: {len(plans)} worker(s) on {len(ray.nodes())} node(s), "
            f"{plans[0]['options']}, {plans[0]['threads'] or 'default'} thread(s) each")
        pool = Pool(plans, config, out_dir, log)
        for info in ray.get(list(pool.infos.values())):
            log(f"ray worker {info['worker']} (pid {info['pid']}) ready")
        pool.queue.extend(items)
        try:
            while pool.queue or pool.running:
                pool.dispatch()
                # A short timeout lets Python see Ctrl-C between waits.
                done, _ = ray.wait(list(pool.running), num_returns=1, timeout=0.5)
                for ref in done:
                    record = pool.collect(ref, max_retries)
                    if record is not None:
                        yield record
        except KeyboardInterrupt:
            log("stopping: asking the running items to save a checkpoint")
            yield from pool.interrupt()
    finally:
        if started:
            ray.shutdown()


def run_calls(function, calls: Sequence[tuple], workers: int, address: Optional[str],
              log) -> List:
    """``function(*args)`` for every ``args`` of ``calls`` on Ray workers, in order.

    One call per worker at a time (e.g. the chunks of a film,
    ``nst_keras.film``); a worker that dies ends the run with ``UserError``
    (what the calls saved is kept).  Returns the results in the order of ``calls``.
    """
    started = connect(workers, address)
    try:
        plans = plan_workers(workers)
        idle = [Worker.options(**p["options"]).remote(p["threads"]) for p in plans]
        log(f"ray: {len(idle)} worker(s), {plans[0]['threads'] or 'default'} thread(s) each")
        queue, running = collections.deque(enumerate(calls)), {}
        results: List = [None] * len(calls)
        while queue or running:
            while queue and idle:
                index, args = queue.popleft()
                worker = idle.pop()
                running[worker.call.remote(function, *args)] = (index, worker)
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in done:
                index, worker = running.pop(ref)
                try:
                    results[index] = ray.get(ref)
                except WORKER_DEATHS as e:
                    raise UserError(f"a Ray worker died ({type(e).__name__}); what it saved "
                                    "is kept: run the same command again to go on") from None
                except ray.exceptions.RayTaskError as e:
                    text = str(getattr(e, "cause", None) or e).strip().splitlines()
                    raise UserError(f"call {index + 1} failed on its Ray worker: "
                                    f"{text[0] if text else type(e).__name__}") from None
                idle.append(worker)
        return results
    finally:
        if started:
            ray.shutdown()
