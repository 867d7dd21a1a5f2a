"""The Source base class: a worker thread decodes, the event loop consumes.

Decoding (PyAV, PyAudio) blocks, so each source runs it in one worker thread and hands frames to
the event loop through an asyncio.Queue. The queue is bounded by a semaphore that the worker must
acquire before each put: when the pipeline falls behind, the worker waits instead of buffering
without limit. Pacing (``realtime``) happens on the loop side, so the worker can decode ahead by up
to ``queue_size`` frames and decode jitter never shows up in ``arrival``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

from edgeomni.errors import SourceError
from edgeomni.frames import AudioFrame, Frame, VideoFrame
from edgeomni.sources.redact import mask_credentials

Emit = Callable[[Frame], bool]
"""Hands one frame to the consumer; returns False once the consumer has gone (stop decoding)."""

_END = object()

# How often a blocked worker re-checks the stop flag, and how long close() waits for it.
_POLL_S = 0.05
_JOIN_TIMEOUT_S = 5.0


class Source:
    """A stream of timestamped audio and/or video frames.

    Subclasses set the descriptive attributes in ``__init__`` and implement ``_run`` (the blocking
    decode loop, called once in the worker thread) and ``_release`` (frees devices/containers; called
    exactly once, in the worker thread if it ran, otherwise by ``close``).
    """

    spec: str
    name: str
    has_audio: bool
    has_video: bool
    live: bool

    def __init__(self, spec: str, name: str, *, live: bool, paced: bool, queue_size: int = 64) -> None:
        # What every event, header and outbox record names: a URL's password never leaves the process.
        self.spec = mask_credentials(spec)
        self.name = name
        self.live = live
        self.has_audio = False
        self.has_video = False
        # Live sources arrive at their own pace; pacing them again would only add delay.
        self.paced = paced and not live
        self.queue_size = queue_size
        self.started_wall: float | None = None
        self.started_monotonic: float | None = None
        self._streams: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue[object] | None = None
        self._slots: threading.Semaphore | None = None
        self._iterated = False
        self._released = False
        self._release_lock = threading.Lock()

    # -- what subclasses provide -------------------------------------------------------------
    def _run(self, emit: Emit, stop: threading.Event) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Free the container/device. Must be safe to call when nothing was opened."""

    # -- public API ---------------------------------------------------------------------------
    def describe(self) -> str:
        """The streams in one line, e.g. 'audio aac 48000 Hz stereo; video h264 640x360 15 fps'."""
        return "; ".join(self._streams) if self._streams else "no streams"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.describe()}>"

    async def frames(self) -> AsyncIterator[AudioFrame | VideoFrame]:
        """Yield frames in presentation order until the stream ends; errors arrive as SourceError.

        A source is single-use: its frames can be iterated once. Breaking out of the loop (then
        ``aclose()`` on the generator, or ``close()`` on the source) or cancelling the consuming task
        stops the worker thread.
        """
        if self._iterated:
            raise SourceError(f"{self.name}: frames() was already iterated; open the source again")
        if self._released:
            raise SourceError(f"{self.name}: the source is closed")
        self._iterated = True
        loop = asyncio.get_running_loop()
        # Unbounded at the asyncio level only so close() can always post the end marker; the
        # semaphore below is what bounds it to queue_size frames.
        queue: asyncio.Queue[object] = asyncio.Queue()
        slots = threading.Semaphore(self.queue_size)
        self._queue, self._slots = queue, slots
        self._thread = threading.Thread(
            target=self._worker, args=(loop, queue, slots), name=f"edgeomni-source:{self.name}", daemon=True
        )
        self._thread.start()
        clock0: float | None = None
        try:
            while True:
                item = await queue.get()
                slots.release()
                # After close() the frames still queued are dropped: the caller asked to stop now.
                if item is _END or self._stop.is_set():
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, AudioFrame | VideoFrame)
                # A microphone hands over a chunk when its *last* sample has been captured, so audio is
                # due at its end, video at its pts; pacing to the start would flatter every latency.
                due = item.end if isinstance(item, AudioFrame) else item.pts
                if clock0 is not None and self.paced:
                    delay = clock0 + due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        if self._stop.is_set():
                            return
                now = time.monotonic()
                if clock0 is None:
                    clock0 = now - due  # the monotonic time of media time 0
                    self.started_monotonic, self.started_wall = clock0, time.time() - due
                # A paced frame was "captured" at its due time: if the pipeline takes it late, that wait is
                # backlog and must show in every latency measured from it.
                item.arrival = clock0 + due if self.paced else now
                yield item
        finally:
            await self._stop_worker()

    async def close(self) -> None:
        """Stop decoding and free the device/container. Safe to call more than once."""
        await self._stop_worker()
        if self._queue is not None:
            # A consumer still awaiting queue.get() in another task must not wait forever.
            self._queue.put_nowait(_END)
        if self._thread is None:
            self._release_once()  # otherwise the worker releases on its way out

    async def __aenter__(self) -> Source:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- worker-thread side -------------------------------------------------------------------
    def _worker(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object], slots: threading.Semaphore
    ) -> None:
        def put(item: object) -> bool:
            if self._stop.is_set():
                return False
            while not slots.acquire(timeout=_POLL_S):
                if self._stop.is_set():
                    return False
            if self._stop.is_set():
                return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return False
            return True

        try:
            self._run(put, self._stop)
        except SourceError as exc:
            put(exc)
        except Exception as exc:  # a bug or an unexpected library error: still end the stream cleanly
            put(SourceError(f"{self.name}: {type(exc).__name__}: {exc}"))
        else:
            put(_END)
        finally:
            self._release_once()

    def _release_once(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self._release()

    async def _stop_worker(self) -> None:
        self._stop.set()
        if self._slots is not None:
            self._slots.release()  # wakes a worker blocked on a full queue; it then sees the stop flag
        thread = self._thread
        if thread is None or threading.current_thread() is thread:
            return
        # Poll rather than join in an executor: an executor thread would itself outlive the source.
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        try:
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            # Cancelled again while cleaning up: the worker sees the stop flag within _POLL_S, so a
            # short blocking join still leaves no thread behind, and the cancellation propagates.
            thread.join(_POLL_S * 4)
            raise
        # A thread still alive here is stuck in a blocking read (network); it is a daemon, exits on
        # its next timeout and releases the container itself.
