"""`--engine ray`: one long-lived actor per GPU (or per CPU slot of `--threads` cores) on a Ray
cluster; each loads the model once and processes many videos (segcli.api.VideoJob(...).run(seg)).

The driver keeps one video in flight per actor and records results as they come back. An actor
that dies (node lost, killed, out of memory) is replaced and its video redone; a video whose
actor died under it twice is recorded as failed. Inputs and model-folder weights are sent
through the object store to actors on other nodes than the driver's (only OUT/ must be shared);
actors on the driver's node read them in place.

Ray is optional: pip install "segcli[ray]".
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from ..errors import UsageError
from .worker import FatalError, Reporter, Worker, WorkerSpec

MAX_CRASHES = 2
POLL_S = 1.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError('--engine ray needs Ray, which is not installed: pip install "segcli[ray]"') from None
    return ray


# ---- what an actor runs -----------------------------------------------------------------------
def _read_tree(path: Path) -> dict[str, bytes]:
    """The bytes of a file, or of every file under a folder (relative POSIX paths)."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[p.relative_to(path).as_posix()] = p.read_bytes()
    return out


def _write_tree(files: dict[str, bytes], root: Path) -> None:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class _ActorReporter(Reporter):
    def __init__(self):
        self.stop = threading.Event()
        self.stop_requested = self.stop.is_set
        self.notices: list[tuple[str, str]] = []

    def notice(self, name, message):
        self.notices.append((name, message))
        del self.notices[:-50]


class BatchActor:
    """A Ray actor (wrapped with ray.remote by RayEngine): one model, many videos. It runs with
    max_concurrency=2 so that status() and stop() answer while run() works."""

    def __init__(self, spec: WorkerSpec, slot: int):
        self.spec = spec
        self.slot = slot
        self.reporter = _ActorReporter()
        self.worker: Worker | None = None
        self._scratch = Path(tempfile.mkdtemp(prefix="segcli-batch-actor-"))

    def node(self) -> tuple[str, int]:
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def receive_weights(self, files: dict[str, bytes], kind: str) -> None:
        """Model-folder or checkpoint weights that are not on this node."""
        root = self._scratch / "weights"
        _write_tree(files, root)
        self.spec.weights = str(root if kind == "folder" else root / next(iter(files)))

    def load(self) -> dict:
        if self.worker is None:
            self.worker = Worker(self.spec, self.slot, self.reporter)
        try:
            self.worker.load()
        except FatalError as exc:
            return {"status": "fatal", "error": str(exc), "exit_code": exc.exit_code}
        return {"status": "ready"}

    def run(self, item, payload=None) -> dict:
        """One item; payload: its files ({relative path: bytes}) when they are not on this node."""
        loaded = self.load()
        if loaded["status"] == "fatal":
            return dict(loaded, name=item.name)
        local = None
        renamed: dict[str, str] = {}  # this node's copy -> the input's own path
        try:
            if payload is not None:
                local = Path(tempfile.mkdtemp(dir=self._scratch, prefix="input-"))
                _write_tree(payload, local)
                if item.files is not None:
                    files = [str(local / Path(f).name) for f in item.files]
                    renamed.update(zip(files, item.files))
                    item.files, item.path = files, str(local)
                elif item.kind == "frames":
                    renamed[str(local)] = item.path
                    item.path = str(local)
                else:
                    renamed[str(local / Path(item.path).name)] = item.path
                    item.path = str(local / Path(item.path).name)
            record = self.worker.run(item)
            if record.get("error"):  # name the input, not this node's copy of it
                for copy in sorted(renamed, key=len, reverse=True):
                    record["error"] = record["error"].replace(copy, renamed[copy])
            return record
        finally:
            if local is not None:
                shutil.rmtree(local, ignore_errors=True)

    def status(self):
        cur = self.worker.current if self.worker is not None else None
        notices, self.reporter.notices = self.reporter.notices, []
        return (dict(cur) if cur else None), notices

    def stop(self) -> None:
        self.reporter.stop.set()

    def __del__(self):
        shutil.rmtree(getattr(self, "_scratch", ""), ignore_errors=True)


# ---- the driver side ----------------------------------------------------------------------------
class RayEngine:
    name = "ray"

    def __init__(self, spec: WorkerSpec, workers: int | None, address: str | None = None,
                 ship: str = "auto", gpus_per_worker: float | None = None):
        self.ray = import_ray()
        self.spec = spec
        self.address = address
        self.ship = ship  # auto: to actors on other nodes; always (tests); never
        self._owns_ray = False
        self._init()
        resources = self.ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        use_gpu = spec.device not in ("cpu", "mps") and gpus > 0
        self.num_gpus = (gpus_per_worker if gpus_per_worker is not None else 1.0) if use_gpu else 0.0
        cpus = int(resources.get("CPU", 1))
        if use_gpu:
            workers = workers or max(1, int(gpus // self.num_gpus))
            spec.threads = spec.threads or max(1, cpus // workers)
        elif workers is None:
            from .local import cpu_slots

            workers, spec.threads = cpu_slots(cpus, spec.threads)
        else:
            spec.threads = spec.threads or max(1, cpus // workers)
        self.workers = max(1, workers)
        if use_gpu and spec.device == "auto":
            spec.device = "cuda"

    def _init(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        kwargs = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                      configure_logging=True)
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(**kwargs)
        except Exception as exc:  # noqa: BLE001 - one line, whatever Ray raised
            where = f" at {self.address}" if self.address else ""
            raise UsageError(f"cannot start or reach a Ray cluster{where}: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        self._owns_ray = True

    def describe(self) -> str:
        gpu = f", {self.num_gpus:g} GPU each" if self.num_gpus else ""
        return f"{self.workers} Ray actor{'s' if self.workers != 1 else ''} x {self.spec.threads} CPUs{gpu}"

    def _actor(self, slot: int):
        ray = self.ray
        remote = ray.remote(BatchActor).options(num_cpus=self.spec.threads, num_gpus=self.num_gpus,
                                                max_concurrency=2, max_restarts=0, max_task_retries=0)
        actor = remote.remote(self.spec, slot)
        return actor

    def _driver_node(self) -> str:
        return self.ray.get_runtime_context().get_node_id()

    def _prepare(self, actor, here: str) -> bool:
        """Whether this actor needs files shipped; sends it the weights when so."""
        node, _pid = self.ray.get(actor.node.remote())
        remote = self.ship == "always" or (self.ship == "auto" and node != here)
        if remote:
            weights = Path(self.spec.weights).expanduser()
            if weights.exists():
                self.ray.get(actor.receive_weights.remote(_read_tree(weights), "folder" if weights.is_dir()
                                                          else "file"))
        return remote

    def _payload(self, item):
        if item.files is not None:
            return {Path(f).name: Path(f).read_bytes() for f in item.files}
        return _read_tree(Path(item.path))

    def run(self, items, sink) -> None:
        ray = self.ray
        from ray.exceptions import RayActorError, RayTaskError

        here = self._driver_node()
        pending = deque(items)
        crashes: dict[str, int] = {}
        actors: dict[int, object] = {}
        ships: dict[int, bool] = {}
        idle: list[int] = []
        inflight: dict = {}  # ref -> (slot, item)
        current: dict[int, str] = {}
        n = min(self.workers, len(pending))
        for slot in range(n):
            actors[slot] = self._actor(slot)
        try:
            for slot in range(n):
                ships[slot] = self._prepare(actors[slot], here)
                idle.append(slot)
            last_poll = 0.0
            while pending or inflight:
                while idle and pending:
                    slot, item = idle.pop(0), pending.popleft()
                    payload = None
                    if ships[slot]:
                        try:
                            payload = ray.put(self._payload(item))
                        except OSError as exc:
                            sink.record(_failed(item, f"cannot read {item.input}: {exc.strerror or exc}"))
                            idle.append(slot)
                            continue
                    ref = actors[slot].run.remote(item, payload)
                    inflight[ref] = (slot, item)
                    current[slot] = item.name
                    sink.event(slot, "claimed", item.name, None)
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.2)
                for ref in ready:
                    slot, item = inflight.pop(ref)
                    current.pop(slot, None)
                    try:
                        record = ray.get(ref)
                    except (RayActorError, RayTaskError) as exc:
                        crashes[item.name] = crashes.get(item.name, 0) + 1
                        if crashes[item.name] >= MAX_CRASHES:
                            sink.record(_failed(item, f"its Ray actor died while processing it "
                                                      f"({crashes[item.name]} times): {type(exc).__name__}"))
                        else:
                            pending.appendleft(item)
                            sink.event(-1, "notice", "", f"worker {slot} died ({type(exc).__name__}); "
                                                         f"{item.name} will be redone")
                        try:
                            ray.kill(actors[slot], no_restart=True)
                        except Exception:  # noqa: BLE001
                            pass
                        from .state import remove_dead_temps

                        remove_dead_temps(Path(self.spec.output))  # its video in progress, if on this host
                        actors[slot] = self._actor(slot)
                        ships[slot] = self._prepare(actors[slot], here)
                        idle.append(slot)
                        continue
                    status = record.get("status")
                    if status == "fatal":
                        raise FatalError(record["error"], record.get("exit_code", 1))
                    if status == "stopped":
                        pending.append(item)
                    else:
                        sink.record(record)
                    idle.append(slot)
                if time.monotonic() - last_poll >= POLL_S and inflight:
                    last_poll = time.monotonic()
                    self._poll(actors, current, sink)
        except BaseException:
            self._stop(actors, inflight, sink)
            raise
        finally:
            for actor in actors.values():
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
            if self._owns_ray:
                ray.shutdown()

    def _poll(self, actors, current, sink) -> None:
        ray = self.ray
        refs = {actors[slot].status.remote(): slot for slot in current}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
        for ref in ready:
            slot = refs[ref]
            try:
                cur, notices = ray.get(ref)
            except Exception:  # noqa: BLE001 - a dying actor: its run() says so
                continue
            for name, message in notices:
                sink.event(slot, "notice", name, message)
            if cur:
                sink.event(slot, "status", cur["name"], (cur["frames"], cur["total"]))

    def _stop(self, actors, inflight, sink) -> None:
        ray = self.ray
        if not inflight:
            return
        sink.event(-1, "notice", "", "stopping: videos in progress are dropped (a rerun redoes them)")
        for actor in actors.values():
            try:
                actor.stop.remote()
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + 60.0
        try:
            while inflight and time.monotonic() < deadline:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                for ref in ready:
                    _slot, _item = inflight.pop(ref)
                    try:
                        record = ray.get(ref)
                    except Exception:  # noqa: BLE001
                        continue
                    if record.get("status") in ("ok", "failed"):
                        sink.record(record)
        except BaseException:  # a second Ctrl-C: the actors are killed below
            pass


def _failed(item, error: str) -> dict:
    from .worker import now

    return {"input": item.input, "name": item.name, "video_id": item.video_id, "status": "failed", "frames": 0,
            "seconds": 0.0, "outputs": [], "error": error, "finished": now()}
