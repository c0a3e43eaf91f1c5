"""The node's inference thread: the only owner of the tracker, fed by queues, never blocking.

Callbacks on the executor only hand messages over (O(1)): the newest frame goes into a
one-slot mailbox (a frame replaced before the worker took it is dropped as ``stale``),
object requests (label-map seeds, ``~/add_objects``) into a pending list, and control
requests (``~/remove_objects``, ``~/reset``) into a FIFO; each request gets a
`concurrent.futures.Future` that the worker completes, so a service can await it without
stalling the image callbacks (single- or multi-threaded executor alike).

Order of work in each round: control requests (in arrival order), then object requests
whose frame has arrived (paired by stamp through the `FrameRingBuffer`), then the newest
frame. A reset discards the object requests received before it (each answered and logged),
never the ones received after. Every frame gets a mask or a counted drop reason.

Nothing here imports rclpy's graph API: results leave through the `publish` callback and
bad input through the `InputWarnings`-like `warn` callback.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import numpy as np

from defvos_core.errors import FrameError, InputError, SeedError
from defvos_core.inference.backend import Backend
from defvos_core.inference.presence import Presence
from defvos_core.inference.seeds import check_seed
from defvos_core.inference.tracker import Tracker, TrackResult
from defvos_ros.object_ids import ObjectIdMap
from defvos_ros.ros_helpers import format_stamp
from defvos_ros.seed_buffer import BufferedFrame, FrameRingBuffer
from defvos_ros.stats import PipelineStats

LOGGER = logging.getLogger('defvos.worker')
MAX_PENDING_REQUESTS = 16


class FrameConverter(Protocol):
    """Turns a buffered message into (H, W, 3) uint8 RGB; raises ImageConversionError."""

    def __call__(self, message: Any) -> np.ndarray: ...


@dataclass
class ObjectRequest:
    """Objects to add or replace at the frame stamped ``stamp_ns``.

    Either a label map (``seed_mask`` topic: value k is object id ``str(k)``;
    ``load_label_map`` converts the message on the worker thread), or prompts by object id
    string: ``masks`` (bool arrays), ``boxes`` (x0, y0, x1, y1) and ``points`` ((x, y,
    label) lists). ``source`` names where it came from in log lines.
    """

    stamp_ns: int
    source: str
    load_label_map: Optional[Callable[[], np.ndarray]] = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    points: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    received_s: float = field(default_factory=time.monotonic)
    generation: int = 0
    future: Future = field(default_factory=Future)
    matched: Optional[BufferedFrame] = None  # its frame, once found (kept while graphs build)


@dataclass(frozen=True)
class AddResult:
    """The answer to an `ObjectRequest`: the mask value of each id."""

    values: dict[str, int]
    tracked: list[str]


@dataclass(frozen=True)
class RemoveResult:
    """The answer to a remove request."""

    removed: list[str]
    unknown: list[str]


@dataclass(frozen=True)
class WorkerSnapshot:
    """What diagnostics and the summary line read (never the tracker itself)."""

    objects: int = 0
    lost: int = 0
    memory_frames: int = 0
    memory_bytes: int = 0


@dataclass(frozen=True)
class FrameOutput:
    """One processed frame, as the node publishes it."""

    result: TrackResult
    presence: dict[int, Presence]  # each object's presence (absent objects: area 0)
    names: dict[int, str]  # tracker object id -> the user's object name
    frame: BufferedFrame  # the input message, its stamp and arrival time
    rgb: np.ndarray  # (H, W, 3) uint8: the converted frame (for the overlay)


@dataclass
class WorkerLimits:
    """Run-time knobs the worker reads on every use (the node updates them).

    No defaults here: the node passes its settings (`NodeSettings`, the one source).
    """

    max_objects: int
    seed_tolerance_sec: float
    seed_wait_sec: float


class TrackingWorker:
    """Runs the tracker on its own thread; see the module docstring for the protocol."""

    def __init__(self, tracker: Tracker, convert: FrameConverter, frames: FrameRingBuffer,
                 stats: PipelineStats, limits: WorkerLimits,
                 publish: Callable[[FrameOutput], None],
                 warn: Callable[[str, str], None], log: Callable[[int, str], None],
                 on_failure: Callable[[BaseException], None], poll_s: float = 0.05) -> None:
        self.tracker = tracker
        self.ids = ObjectIdMap()
        self._convert = convert
        self._frames = frames
        self._stats = stats
        self.limits = limits
        self._publish = publish
        self._warn = warn
        self._log = log
        self._on_failure = on_failure
        self._poll_s = poll_s
        self._wake = threading.Condition()
        self._latest: Optional[BufferedFrame] = None
        self._requests: list[ObjectRequest] = []
        self._new_request = False  # set on arrival; pending ones are re-checked every poll
        self._controls: list[tuple[str, Any, Future]] = []
        self._generation = 0
        self._stopping = False
        self._last_published_ns: Optional[int] = None
        self._snapshot = WorkerSnapshot()
        self._preparing: set[tuple[int, int]] = set()
        self._snapshot_lock = threading.Lock()
        self.failed: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name='defvos-inference', daemon=True)

    # ------------------------------------------------------------------ executor side (O(1))
    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the thread runs (False after a stop or a failure)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 1.0) -> bool:
        """Ask the thread to stop after its current item; True if it ended within ``timeout``."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def submit_frame(self, frame: BufferedFrame) -> None:
        """Make ``frame`` the newest; a frame it replaces is dropped as stale."""
        self._frames.push(frame)
        with self._wake:
            if self._latest is not None:
                self._stats.frame_dropped('stale')
            self._latest = frame
            self._wake.notify()

    def submit_objects(self, request: ObjectRequest) -> Future:
        """Queue an object request; its future gets an `AddResult` or an exception."""
        with self._wake:
            request.generation = self._generation
            if len(self._requests) >= MAX_PENDING_REQUESTS:
                oldest = self._requests.pop(0)
                self._fail(oldest, SeedError('seed_overflow', f'{MAX_PENDING_REQUESTS} object '
                                             'requests waiting for their frames: dropped the '
                                             f'oldest ({oldest.source} stamped '
                                             f'{format_stamp(oldest.stamp_ns)})'))
            self._requests.append(request)
            self._new_request = True
            self._wake.notify()
        return request.future

    def submit_remove(self, ids: list[str]) -> Future:
        """Queue a removal by id; the future gets a `RemoveResult`."""
        return self._control('remove', list(ids))

    def submit_reset(self) -> Future:
        """Queue a reset; the future gets the list of ids that were tracked."""
        with self._wake:
            self._generation += 1  # requests received before this one are discarded
        return self._control('reset', None)

    @property
    def pending_requests(self) -> int:
        """Return the object requests waiting for their frames or to be applied."""
        with self._wake:
            return len(self._requests)

    def snapshot(self) -> WorkerSnapshot:
        """Return the latest object and memory figures (thread-safe)."""
        with self._snapshot_lock:
            return self._snapshot

    def _control(self, kind: str, argument: Any) -> Future:
        future: Future = Future()
        with self._wake:
            self._controls.append((kind, argument, future))
            self._wake.notify()
        return future

    # ------------------------------------------------------------------------- the thread
    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    self._wake.wait_for(self._has_work, timeout=self._poll_s)
                    if self._stopping:
                        break
                    controls, self._controls = self._controls, []
                    self._new_request = False
                for kind, argument, future in controls:
                    self._guarded(self._apply_control, kind, argument, future)
                self._process_requests()
                frame = self._take_latest()
                if frame is not None:
                    self._guarded(self._process_frame, frame)
        except BaseException as error:  # the loop itself broke: report, do not hang
            self.failed = error
            LOGGER.error('inference worker died: %s: %s', type(error).__name__, error)
            self._on_failure(error)
        finally:
            self._cancel_pending()

    def _has_work(self) -> bool:
        return bool(self._stopping or self._latest is not None or self._controls
                    or self._new_request)

    def _guarded(self, work: Callable, *args) -> None:
        """Run one item; an unexpected error is logged and the worker goes on."""
        try:
            work(*args)
        except Exception as error:  # torch/onnxruntime raise many types (e.g. OOM)
            self._log(logging.ERROR, f'error while tracking: {type(error).__name__}: {error}')
            frame = args[0] if args and isinstance(args[0], BufferedFrame) else None
            if frame is not None:
                self._stats.frame_dropped('error')
            future = args[-1] if args and isinstance(args[-1], Future) else None
            if future is not None and not future.done():
                future.set_exception(error)

    def _cancel_pending(self) -> None:
        with self._wake:
            requests, self._requests = self._requests, []
            controls, self._controls = self._controls, []
        for request in requests:
            if not request.future.done():
                request.future.set_exception(RuntimeError('the node is shutting down'))
        for _, _, future in controls:
            if not future.done():
                future.set_exception(RuntimeError('the node is shutting down'))

    def _take_latest(self, stamp_ns: Optional[int] = None) -> Optional[BufferedFrame]:
        with self._wake:
            frame = self._latest
            if frame is not None and (stamp_ns is None or frame.stamp_ns == stamp_ns):
                self._latest = None
                return frame
        return None

    # ---------------------------------------------------------------------- control requests
    def _apply_control(self, kind: str, argument: Any, future: Future) -> None:
        if kind == 'reset':
            tracked = [object_id for object_id, _ in self.ids.items()]
            self.tracker.reset()
            self.ids.clear()
            self._last_published_ns = None
            self._discard_requests_before(self._generation)
            self._update_snapshot({})
            future.set_result(tracked)
            return
        removed, unknown = [], []
        for object_id in argument:
            if object_id not in self.ids:
                unknown.append(object_id)
                continue
            self.tracker.remove_object(self.ids.value_of(object_id))
            self.ids.remove(object_id)
            removed.append(object_id)
        if removed:
            tracked = [object_id for object_id, _ in self.ids.items()]
            self._log(logging.INFO, f'removed {removed}; tracking {tracked}')
        self._update_snapshot({})
        future.set_result(RemoveResult(removed, unknown))

    def _discard_requests_before(self, generation: int) -> None:
        with self._wake:
            old = [r for r in self._requests if r.generation < generation]
            self._requests = [r for r in self._requests if r.generation >= generation]
        for request in old:
            self._log(logging.INFO, f'{request.source} stamped {format_stamp(request.stamp_ns)} '
                      'discarded: a reset arrived after it')
            self._fail(request, SeedError('seed_reset', 'discarded by a reset that arrived '
                                          'after it'), warn=False)

    # ----------------------------------------------------------------------- object requests
    def _process_requests(self) -> None:
        with self._wake:
            pending = list(self._requests)
        tolerance_ns = int(round(self.limits.seed_tolerance_sec * 1e9))
        for request in pending:
            frame = request.matched or self._frames.match(request.stamp_ns, tolerance_ns)
            if frame is None and self._may_wait(request, tolerance_ns):
                continue
            with self._wake:
                if request not in self._requests:
                    continue  # discarded by a reset meanwhile
                self._requests.remove(request)
            if frame is None:
                self._fail(request, SeedError('seed_no_frame', self._no_frame_text(request)))
                continue
            self._guarded(self._apply_request, request, frame, request.future)

    def _may_wait(self, request: ObjectRequest, tolerance_ns: int) -> bool:
        """Whether a request stamped after every buffered frame may still wait for it."""
        span = self._frames.span()
        ahead = span is None or request.stamp_ns > span[1] + tolerance_ns
        return ahead and time.monotonic() - request.received_s < self.limits.seed_wait_sec

    def _no_frame_text(self, request: ObjectRequest) -> str:
        span = self._frames.span()
        held = ('no frame buffered yet' if span is None else
                f'buffered frames span {format_stamp(span[0])}..{format_stamp(span[1])}')
        return (f'no frame within +-{self.limits.seed_tolerance_sec} s of its stamp ({held}, '
                f'last {self._frames.capacity} kept); stamp it with its frame\'s header.stamp')

    def _fail(self, request: ObjectRequest, error: InputError, warn: bool = True) -> None:
        if warn:
            self._warn(error.kind, f'{request.source} stamped {format_stamp(request.stamp_ns)} '
                       f'rejected: {error}')
        if not request.future.done():
            request.future.set_exception(error)

    def _apply_request(self, request: ObjectRequest, frame: BufferedFrame,
                       future: Future) -> None:
        try:
            rgb = self._convert(frame.item)
            if not self._ready_for(rgb.shape[:2]):
                request.matched = frame  # retried once the graphs for its size are built
                with self._wake:
                    self._requests.insert(0, request)
                return
            planned, label_map = self._plan(request, rgb.shape)
            tracked_after = set(self.ids.items()) | set(planned.items())
            if len({value for _, value in tracked_after}) > self.limits.max_objects:
                raise SeedError('seed_too_many', f'it would make {len(tracked_after)} tracked '
                                f'objects but max_objects is {self.limits.max_objects}')
            boxes = {planned[i]: box for i, box in request.boxes.items()}
            points = {planned[i]: pts for i, pts in request.points.items()}
            if boxes or points:
                result = self.tracker.add_objects(rgb, label_map, boxes=boxes, points=points)
            else:
                result = self.tracker.add_objects(rgb, label_map)
        except InputError as error:
            self._fail(request, error)
            return
        self.ids.commit(planned)
        # the seed frame is counted here only if the worker had not taken it yet (a frame
        # already answered or dropped is not counted twice)
        taken = self._take_latest(frame.stamp_ns) is not None
        published = self._publish_result(result, frame, rgb, only_if_newest=True,
                                         count=taken)
        if taken and not published:
            self._stats.frame_dropped('seed_frame')
        note = '' if published else ' (older than the last mask: not published)'
        tracked = [object_id for object_id, _ in self.ids.items()]
        self._log(logging.INFO, f'{request.source} at frame {format_stamp(frame.stamp_ns)}: '
                  f'added/replaced {sorted(planned)}, tracking {tracked}{note}')
        future.set_result(AddResult(planned, tracked))

    def _plan(self, request: ObjectRequest, shape: tuple[int, ...]
              ) -> tuple[dict[str, int], Optional[np.ndarray]]:
        """Return (id -> mask value, label map of the mask seeds) for a request."""
        if request.load_label_map is not None:
            try:
                label_map = request.load_label_map()
            except InputError as error:
                raise SeedError('seed_invalid', str(error)) from error
            seed, values = check_seed(label_map, shape)
            return self.ids.plan_values(values), seed
        ids = list(request.masks) + list(request.boxes) + list(request.points)
        planned = self.ids.plan(ids)
        label_map = None
        if request.masks:
            label_map = np.zeros(shape[:2], np.int64)
            for object_id, mask in request.masks.items():
                if mask.shape != tuple(shape[:2]):
                    raise SeedError('seed_size', f"object '{object_id}': mask is "
                                    f'{mask.shape[1]}x{mask.shape[0]} but its frame is '
                                    f'{shape[1]}x{shape[0]}')
                label_map[mask] = planned[object_id]
        return planned, label_map

    # --------------------------------------------------------------------------------- frames
    def _ready_for(self, size: tuple[int, int]) -> bool:
        """Whether the backend can run this frame's size now; if not, prepare it off-thread.

        Only backends with per-size graphs (onnxruntime) are ever not ready; the export
        runs on its own thread so the worker keeps serving requests.
        """
        backend = self.tracker.backend
        size = (int(size[0]), int(size[1]))
        try:
            if backend.is_prepared(*size):
                return True
        except InputError:
            return True  # a frame the tracker refuses: step() reports it
        if size not in self._preparing:
            self._preparing.add(size)
            self._log(logging.INFO, f'preparing the graphs for {size[0]}x{size[1]} frames '
                      '(frames are dropped meanwhile; parameter expected_image_sizes '
                      'prepares them at configure time)')
            threading.Thread(target=self._prepare, args=(backend, size), daemon=True,
                             name='defvos-prepare').start()
        return False

    def _prepare(self, backend: Backend, size: tuple[int, int]) -> None:
        try:
            backend.prepare(*size)
            self._log(logging.INFO, f'graphs for {size[0]}x{size[1]} frames ready')
        except Exception as error:
            self._log(logging.ERROR, f'cannot prepare graphs for {size[0]}x{size[1]} frames: '
                      f'{type(error).__name__}: {error}')
        finally:
            self._preparing.discard(size)

    def _process_frame(self, frame: BufferedFrame) -> None:
        if not self.tracker.object_ids:
            self._stats.frame_dropped('no_objects')
            return
        try:
            rgb = self._convert(frame.item)
        except InputError as error:
            self._stats.frame_dropped('invalid')
            self._warn(error.kind, f'frame stamped {format_stamp(frame.stamp_ns)} dropped: '
                       f'{error}')
            return
        if not self._ready_for(rgb.shape[:2]):
            self._stats.frame_dropped('preparing')
            return
        try:
            result = self.tracker.step(rgb)
        except FrameError as error:
            self._stats.frame_dropped('rejected')
            self._warn(error.kind, f'frame stamped {format_stamp(frame.stamp_ns)} dropped: '
                       f'{error} (call ~/reset, then add objects again)')
            return
        if not self._publish_result(result, frame, rgb):
            self._stats.frame_dropped('no_objects')

    def _publish_result(self, result: TrackResult, frame: BufferedFrame, rgb: np.ndarray,
                        only_if_newest: bool = False, count: bool = True) -> bool:
        """Publish a frame's result; False when nothing is published.

        count: the frame is counted as processed (before publishing, so the count is never
        behind a mask a subscriber already has).
        """
        tiny = result.tiny_objects
        if tiny:
            names = [self.ids.id_of(value) or str(value) for value in tiny]
            self._log(logging.WARNING, f'objects {names} are smaller than one stride-4 cell at '
                      'the processing size: kept at the finest scale, but expect a coarse '
                      'mask (raise the processing size for small objects)')
        presence = result.presence
        self._update_snapshot(presence)
        if not result.object_ids:
            return False
        if (only_if_newest and self._last_published_ns is not None
                and frame.stamp_ns < self._last_published_ns):
            return False  # keep the mask stream in stamp order for stamp-fusing consumers
        ids = {value: object_id for object_id, value in self.ids.items()}
        if count:
            self._stats.frame_processed((time.monotonic_ns() - frame.received_ns) * 1e-9)
        self._publish(FrameOutput(result, presence, ids, frame, rgb))
        self._last_published_ns = frame.stamp_ns
        return True

    def _update_snapshot(self, presence: dict[int, Presence]) -> None:
        snapshot = WorkerSnapshot(
            objects=len(self.tracker.object_ids),
            lost=sum(1 for state in presence.values() if not state.present),
            memory_frames=self.tracker.memory_frames(),
            memory_bytes=self.tracker.memory_bytes())
        with self._snapshot_lock:
            self._snapshot = snapshot
