"""Which engine answers a request: bundles pinned at start, and a model store loaded on first use.

    store/                        bert serve --model-store store --max-loaded-models 2
      sst2/1/  sst2/2/  sst2/10/  versions of sst2: the highest by natural sort serves (10)
      conll/bundle.json ...       one unversioned bundle
      squad/int8/  squad/fp32/    one unversioned bundle in precision variants (named fp32, int8, fp16)

Route handlers hold an engine for the whole request with `async with registry.use(task, name)`.
That count is what makes unloading and hot swaps safe: a model that is unloaded or replaced
leaves the registry at once, so new requests go to its successor (or load it again), while its
batcher is closed only after the last request holding it is done.

The registry lives on the event loop; directory scans and model loads run in threads, and a lock
per model makes its load, reloads and polls take turns. A version that fails to load or verify is
refused with one log line naming it, and is tried again only once its files change.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.bundle import MODEL_FILE, NAME_PATTERN, PRECISIONS, Manifest, is_bundle, read_manifest
from service.backends import resolve_variant
from service.engine import TASK_ROUTES, ModelEngine
from service.errors import InvalidInputError, ModelNotFoundError, ModelUnavailableError, VersionRefusedError

log = logging.getLogger("service")
VARIANT_DIRS = frozenset(PRECISIONS)  # sub-directories so named are one bundle's variants, not its versions


class BundleRefusedError(RuntimeError):
    """A bundle that cannot be served; the message is the one log line that says why."""


# --- the store on disk ------------------------------------------------------------------------


def natural_key(name: str) -> tuple:
    """Digit runs compare as numbers: 2 < 10, v9 < v10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


@dataclass(frozen=True)
class Version:
    """One servable directory of a model: a bundle, or a directory of its precision variants."""

    model: str
    name: str | None  # the VERSION directory; None for an unversioned `NAME/`
    path: Path
    fingerprint: tuple  # (file, size, mtime) of every file: changed files make it a new candidate
    manifest: Manifest | None = field(default=None, compare=False)  # of the variant this device picks
    problem: str | None = field(default=None, compare=False)  # why there is no manifest
    model_bytes: int = field(default=0, compare=False)  # that variant's model.onnx: the memory estimate

    @property
    def label(self) -> str:
        return f"{self.model} version {self.name}" if self.name is not None else f"{self.model} (unversioned)"


@dataclass(frozen=True)
class ModelStore:
    root: Path
    device: str = "cpu"  # which variant of a multi-variant directory loads, as open_model picks it
    precision: str = "auto"

    def scan(self) -> tuple[dict[str, list[Version]], list[str]]:
        """Every model's versions (newest first), and a line per directory that was skipped."""
        models: dict[str, list[Version]] = {}
        problems = []
        for directory in sorted(self.root.iterdir()):
            if not directory.is_dir() or directory.name.startswith("."):
                continue
            if not NAME_PATTERN.match(directory.name):
                problems.append(f"model store: {directory} skipped: a model name may hold only letters, digits, -_.")
                continue
            try:
                versions = self.versions(directory.name)
            except OSError as err:  # removed or unreadable while we looked
                problems.append(f"model store: {directory} skipped: {err}")
                continue
            if versions:
                models[directory.name] = versions
        return models, problems

    def versions(self, model: str) -> list[Version]:
        """The versions of one model, newest first; [] when it has none (yet)."""
        directory = self.root / model
        if not NAME_PATTERN.match(model) or not directory.is_dir():
            return []
        if is_bundle(directory) or any(is_bundle(directory / v) for v in VARIANT_DIRS):
            return [self._version(model, None, directory)]
        versions = []
        subs = [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for sub in sorted(subs, key=lambda p: natural_key(p.name), reverse=True):
            # a directory without any bundle.json yet is an export or a copy in progress
            if is_bundle(sub) or any(is_bundle(p) for p in sub.iterdir() if p.is_dir()):
                versions.append(self._version(model, sub.name, sub))
        return versions

    def _version(self, model: str, name: str | None, path: Path) -> Version:
        fingerprint = _fingerprint(path)
        try:
            bundle_dir = resolve_variant(path, self.device, self.precision)
            manifest = read_manifest(bundle_dir)
            size = (bundle_dir / MODEL_FILE).stat().st_size
        except (OSError, ValueError) as err:  # BundleError is a ValueError naming the file or field
            return Version(model, name, path, fingerprint, problem=first_line(err))
        return Version(model, name, path, fingerprint, manifest, model_bytes=size)


def _fingerprint(path: Path) -> tuple:
    files = []
    for directory in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        for f in sorted(directory.iterdir()):
            if f.is_file():
                stat = f.stat()
                files.append((str(f.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return tuple(files)


def first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


# --- the registry -----------------------------------------------------------------------------


@dataclass(eq=False)
class Served:
    """A loaded engine and the requests holding it."""

    engine: ModelEngine
    version: Version | None  # None: a bundle pinned with --bundles
    in_flight: int = 0
    retired: bool = False  # unloaded or replaced: closed once in_flight is back to 0

    @property
    def model_bytes(self) -> int:
        return self.version.model_bytes if self.version else 0


@dataclass
class ModelEntry:
    """One line of GET /v1/models."""

    name: str
    task: str
    manifest: Manifest | None  # what serves or would serve; None for a pinned bundle (see engine)
    engine: ModelEngine | None  # None while not loaded
    version: str | None
    versions: list[str]  # newest first; [] for an unversioned model or a pinned bundle
    refused: list[tuple[str | None, str]]  # (version, why) of each version that failed to load
    default: bool


@dataclass
class ReloadResult:
    name: str
    version: str | None
    previous_version: str | None
    changed: bool


Opener = Callable[[str, Version], ModelEngine]  # blocking: load, verify, warm up; BundleRefusedError says why
Closer = Callable[[ModelEngine, float | None], None]  # blocking: finish the batcher's work and stop it


class Registry:
    """Models by name: pinned bundles (`add`) and the store's, loaded on first use up to the limits."""

    def __init__(
        self,
        store: ModelStore | None = None,
        opener: Opener | None = None,
        closer: Closer | None = None,
        max_loaded: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.store = store
        self._opener = opener
        self._closer = closer or (lambda engine, timeout: engine.batcher.close(timeout))
        self.max_loaded = max_loaded
        self.max_bytes = max_bytes
        self.defaults: dict[str, str] = {}  # task -> the model that answers requests without `model`
        self._loaded: OrderedDict[str, Served] = OrderedDict()  # least recently used first
        self._pinned: list[str] = []
        self._available: dict[str, list[Version]] = {}  # the store's models, from the last scan
        self._refused: dict[Version, str] = {}
        self._warned: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._retired: set[Served] = set()  # waiting for their last request

    # --- lookups ------------------------------------------------------------------------------

    @property
    def engines(self) -> dict[str, ModelEngine]:
        """The loaded models by name."""
        return {name: served.engine for name, served in self._loaded.items()}

    def loaded(self, name: str) -> ModelEngine | None:
        served = self._loaded.get(name)
        return served.engine if served else None

    def loaded_for(self, task: str, name: str | None) -> ModelEngine | None:
        """The loaded engine a request to `task`'s endpoint for model `name` (None: the default) would
        use, without loading, waiting or touching the LRU order; None when it is not loaded or not
        that task's (the request then takes the full path, which says why)."""
        served = self._loaded.get(name if name is not None else self.defaults.get(task, ""))
        if served is None or served.retired or served.engine.task != task:
            return None
        return served.engine

    def add(self, engine: ModelEngine) -> None:
        """Pin a bundle loaded at start: never unloaded, not counted against the store's limits."""
        if engine.name in self._loaded:
            raise ValueError(f"two bundles are named {engine.name!r}; bundle names must be unique")
        self._loaded[engine.name] = Served(engine, None)
        self._pinned.append(engine.name)
        self._update_defaults()

    @asynccontextmanager
    async def use(self, task: str | None, name: str | None) -> AsyncIterator[ModelEngine]:
        """Hold model `name` (None: the task's default; task None: any model) for one request."""
        served = await self._acquire(task, name)
        try:
            yield served.engine
        finally:
            served.in_flight -= 1
            if served.retired and served.in_flight == 0:
                self._close_soon(served)

    async def _acquire(self, task: str | None, name: str | None) -> Served:
        name = await self._resolve(task, name)
        served = self._loaded.get(name)
        if served is None:
            served = await self._load(name)
        # No await from here on: nothing can retire `served` before it is counted.
        self._loaded.move_to_end(name)
        served.in_flight += 1
        return served

    async def _resolve(self, task: str | None, name: str | None) -> str:
        if name is None:
            name = self.defaults.get(task) if task else next(iter([*self._loaded, *sorted(self._available)]), None)
            if name is None:
                raise ModelNotFoundError(f"no {task or ''} model is served; models: {self._listing()}")
            return name
        if name not in self._loaded and name not in self._available and self.store is not None:
            self._apply_versions(name, await asyncio.to_thread(self.store.versions, name))  # added since the scan
        if name in self._loaded:
            model_task = self._loaded[name].engine.task
        elif name in self._available:
            model_task = _task_of(self._available[name])
        else:
            raise ModelNotFoundError(f"model {name!r} is not served; models: {self._listing()}")
        if task is not None and model_task != task:
            route = TASK_ROUTES.get(model_task, "its endpoint")
            raise InvalidInputError("model", f"{name!r} is a {model_task} model; send it to {route}")
        return name

    def _listing(self) -> str:
        loaded = [f"{n} ({s.engine.task})" for n, s in self._loaded.items()]
        others = [
            f"{n} ({_task_of(v)}, not loaded)" for n, v in sorted(self._available.items()) if n not in self._loaded
        ]
        return ", ".join(loaded + others) or "none"

    # --- loading, swapping, unloading -----------------------------------------------------------

    async def _load(self, name: str) -> Served:
        """First use: the newest version that loads and verifies."""
        async with self._lock(name):
            served = self._loaded.get(name)
            if served is not None:  # loaded while this request waited for the lock
                return served
            for version in [v for v in self._available.get(name, []) if v not in self._refused]:
                try:
                    served = await self._open(name, version)
                except BundleRefusedError:
                    continue
                self._install(name, served)
                return served
            reasons = "; ".join(f"{v.label}: {why}" for v, why in self._refused.items() if v.model == name)
            raise ModelUnavailableError(f"model {name!r} has no version that loads ({reasons or 'none found'})")

    async def reload(self, name: str) -> ReloadResult:
        """Swap in the newest version of `name` now, loading it if it was not; VersionRefusedError if it fails."""
        if name in self._pinned:
            raise InvalidInputError(
                "name", f"{name!r} is served from --bundles, not the model store; restart to change it"
            )
        if self.store is None:
            raise ModelNotFoundError("there is no model store to reload from; start with --model-store DIR")
        async with self._lock(name):
            self._apply_versions(name, await asyncio.to_thread(self.store.versions, name))
            current = self._loaded.get(name)
            previous = current.version.name if current else None
            versions = self._available.get(name)
            if not versions:
                if current is None:
                    raise ModelNotFoundError(f"model {name!r} is not in the model store; models: {self._listing()}")
                self._unload(name, "its directory left the model store")
                return ReloadResult(name, None, previous, changed=True)
            newest = versions[0]
            if current is not None and current.version == newest:
                return ReloadResult(name, newest.name, previous, changed=False)
            try:
                served = await self._open(name, newest)
            except BundleRefusedError as err:
                keeps = f"{current.version.label} keeps serving" if current else "nothing was loaded"
                raise VersionRefusedError(f"{newest.label} refused: {err}; {keeps}") from None
            self._install(name, served)
            return ReloadResult(name, newest.name, previous, changed=True)

    async def refresh(self) -> None:
        """The poll: rescan the store, swap newer versions into loaded models, unload the removed ones."""
        assert self.store is not None
        try:
            found, problems = await asyncio.to_thread(self.store.scan)
        except OSError as err:  # the whole store is unreadable: keep serving what is loaded, look again later
            self._warn(f"model store {self.store.root} cannot be read: {err}; the next poll tries again")
            return
        self._apply_scan(found, problems)
        for name in [n for n in self._loaded if n not in self._pinned]:
            async with self._lock(name):
                current = self._loaded.get(name)
                if current is None:  # unloaded while we waited
                    continue
                versions = self._available.get(name)
                if not versions:
                    self._unload(name, "its directory left the model store")
                    continue
                newest = _successor(versions, current.version, self._refused)
                if newest is None:
                    continue
                try:
                    served = await self._open(name, newest)
                except BundleRefusedError:
                    continue  # logged and remembered: tried again once its files change
                if name in self._loaded:
                    self._install(name, served)
                else:  # unloaded to make room for another model while this one loaded
                    self._close_soon(served)

    async def _open(self, name: str, version: Version) -> Served:
        """Load `version` in a thread; a failure is remembered, logged and raised as BundleRefusedError."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._opener, name, version)
        try:
            engine = await asyncio.shield(future)
        except asyncio.CancelledError:  # the load goes on in its thread: close what it opens
            future.add_done_callback(lambda f: f.cancelled() or f.exception() or self._closer(f.result(), None))
            raise
        except Exception as err:  # BundleRefusedError names the file at fault; anything else is refused too
            reason = str(err) if isinstance(err, BundleRefusedError) else f"{type(err).__name__}: {err}"
            self._refused[version] = reason
            current = self._loaded.get(name)
            keeps = f"; {current.version.label} keeps serving" if current and current.version else ""
            log.error("model store: %s refused: %s%s", version.label, reason, keeps)
            raise BundleRefusedError(reason) from None
        return Served(engine, version)

    def _install(self, name: str, served: Served) -> None:
        old = self._loaded.pop(name, None)
        self._loaded[name] = served  # most recently used
        if old is not None:
            self._retire(old)
            log.info(
                "model store: %s replaces version %s; %d requests in flight finish on the old one",
                served.version.label, old.version.name, old.in_flight,
            )  # fmt: skip
        else:
            log.info("model store: loaded %s (%s)", served.version.label, served.engine.task)
        self._evict(keep=name)

    def _evict(self, keep: str) -> None:
        """Unload the least recently used store models until the rest fit the limits; `keep` always stays."""
        while True:
            names = [n for n in self._loaded if n not in self._pinned]  # least recently used first
            over_count = self.max_loaded is not None and len(names) > self.max_loaded
            over_bytes = self.max_bytes is not None and sum(self._loaded[n].model_bytes for n in names) > self.max_bytes
            victims = [n for n in names if n != keep]
            if not (over_count or over_bytes) or not victims:
                return
            self._unload(victims[0], "least recently used")

    def _unload(self, name: str, why: str) -> None:
        served = self._loaded.pop(name)
        self._retire(served)
        log.info("model store: unloaded %s (%s)", served.version.label, why)

    def _retire(self, served: Served) -> None:
        served.retired = True
        if served.in_flight == 0:
            self._close_soon(served)
        else:
            self._retired.add(served)

    def _close_soon(self, served: Served) -> None:
        self._retired.discard(served)
        asyncio.get_running_loop().run_in_executor(None, self._closer, served.engine, None)

    def close(self, timeout: float | None = None) -> None:
        """Shut-down: finish queued work and stop every batcher, the retired ones' too (blocking)."""
        for served in [*self._loaded.values(), *self._retired]:
            self._closer(served.engine, timeout)

    def _warn(self, line: str) -> None:
        """Log a problem of the store once, not at every poll."""
        if line not in self._warned:
            self._warned.add(line)
            log.warning("%s", line)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # --- what the store holds -----------------------------------------------------------------

    def load_store(self) -> None:
        """Start-up: scan the store (blocking); nothing loads before its first request."""
        if self.store is None:
            return
        if not self.store.root.is_dir():
            raise BundleRefusedError(f"model store {self.store.root} is not a directory")
        self._apply_scan(*self.store.scan())

    def _apply_scan(self, found: dict[str, list[Version]], problems: list[str]) -> None:
        for name in [n for n in found if n in self._pinned]:
            problems.append(f"model store: {name} skipped: a bundle of that name is served from --bundles")
            del found[name]
        for line in problems:
            self._warn(line)
        self._available = {}
        for name, versions in found.items():
            self._apply_versions(name, versions)
        current = {v for versions in found.values() for v in versions}
        self._refused = {v: why for v, why in self._refused.items() if v in current}

    def _apply_versions(self, name: str, versions: list[Version]) -> None:
        if name in self._pinned:
            return
        for version in versions:
            if version.problem and version not in self._refused:
                self._refused[version] = version.problem
                log.error("model store: %s refused: %s", version.label, version.problem)
        if versions:
            self._available[name] = versions
        else:
            self._available.pop(name, None)
        self._update_defaults()

    def _update_defaults(self) -> None:
        """Per task, the first pinned bundle of the task, else the store's first model of it by name."""
        defaults: dict[str, str] = {}
        for name in self._pinned:
            defaults.setdefault(self._loaded[name].engine.task, name)
        for name, versions in sorted(self._available.items()):
            task = _task_of(versions)
            if task:
                defaults.setdefault(task, name)
        self.defaults = defaults

    def models(self) -> list[ModelEntry]:
        """The pinned bundles, then the store's models (loaded or not), by name."""
        entries = []
        for name in self._pinned:
            engine = self._loaded[name].engine
            entries.append(
                ModelEntry(name, engine.task, None, engine, None, [], [], self.defaults.get(engine.task) == name)
            )
        for name in sorted(set(self._available) | {n for n in self._loaded if n not in self._pinned}):
            served = self._loaded.get(name)
            versions = self._available.get(name, [])
            serving = served.version if served else next((v for v in versions if v not in self._refused), None)
            if serving is None or serving.manifest is None:
                continue  # nothing of it can load: its refusals are in the log
            entries.append(
                ModelEntry(
                    name=name,
                    task=serving.manifest.task,
                    manifest=serving.manifest,
                    engine=served.engine if served else None,
                    version=serving.name,
                    versions=[v.name for v in versions if v.name is not None],
                    refused=[(v.name, why) for v, why in self._refused.items() if v.model == name],
                    default=self.defaults.get(serving.manifest.task) == name,
                )
            )
        return entries


def _task_of(versions: list[Version]) -> str | None:
    return next((v.manifest.task for v in versions if v.manifest is not None), None)


def _successor(versions: list[Version], current: Version | None, refused: dict[Version, str]) -> Version | None:
    """The version a poll swaps in: the newest one not refused, never older than the one serving."""
    for version in versions:
        if version == current:
            return None
        if version not in refused:
            return version
        if current is not None and version.name == current.name:  # the serving version's files changed, refused
            return None
    return None
