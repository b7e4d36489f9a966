"""Recordings of live sessions: which feeds are recorded, when files are final, and who is told.

A `Recording` owns one FeedRecorder per recorded feed, writing `<data_dir>/recordings/<recording_id>/
<feed_id>.<webm|mkv>`. It watches its session through two small hooks: `Session.observers` (a feed is
unpublished or its participant leaves: that feed's file is finalized at once) and
`SessionMedia.media_observers` (a feed gets packets: recorded when the recording covers it; the session's
media closes: the recording stops). Metadata goes to the store at start, whenever a file opens or ends, and
at stop, so `GET /v1/recordings/{id}` works after a restart; recordings a crash cut short are marked
`interrupted` at the next start.

Events: participants get `recording {state:"started"|"stopped"|"failed", recording_id}` and
`session.recording` is true while any recording of the session runs. Webhooks: `recording_started`,
`recording_failed` (a file could not be written: disk full, unwritable directory; the recording stops, the
session goes on) and `recording_finished` with the manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sfu.errors import Conflict, NotFound
from sfu.recording.mux import FileStats, can_record, file_extension
from sfu.recording.recorder import FeedRecorder
from sfu.store.base import RecordingRecord, Store

if TYPE_CHECKING:
    from sfu.media.receiver import Receiver
    from sfu.session.feed import Feed
    from sfu.session.participant import Participant
    from sfu.session.session import Session

log = logging.getLogger("sfu.recording")

CHECKPOINT_S = 5.0  # how stale the stored manifest of a running recording may be after a crash


class Webhooks(Protocol):
    def emit(self, cid: str, event: str, payload: dict[str, Any]) -> None: ...


def new_recording_id() -> str:
    return "rec_" + secrets.token_hex(8)


class Recording:
    """One recording of one session; `stop()` returns when every file is final."""

    def __init__(self, service: RecordingService, session: Session, feed_ids: tuple[str, ...] | None,
                 directory: Path) -> None:
        self.service = service
        self.session = session
        self.recording_id = directory.name
        self.feed_ids = feed_ids
        self.directory = directory
        self.started_at = time.time()
        self.stopped_at: float | None = None
        self.state = "recording"
        self.error: str | None = None
        self.recorders_by_feed: dict[str, FeedRecorder] = {}
        self.files_by_name: dict[str, dict[str, Any]] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._stop_task: asyncio.Task[RecordingRecord] | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None

    def start_checkpoints(self) -> None:
        """Saves the manifest (sizes, durations so far) every CHECKPOINT_S, for GET after a crash."""
        name = f"record-checkpoint-{self.recording_id}"
        self._checkpoint_task = asyncio.create_task(self._checkpoints(), name=name)

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_S)
            await self.service.save(self)

    # -- feeds -------------------------------------------------------------------------------------------

    def add_feed(self, feed: Feed, receiver: Receiver) -> None:
        """Starts a FeedRecorder for a feed this recording covers (once per feed id)."""
        if self.state != "recording" or (self.feed_ids is not None and feed.feed_id not in self.feed_ids):
            return
        if feed.feed_id in self.recorders_by_feed or not can_record(receiver.codec):
            if not can_record(receiver.codec):
                log.warning("feed %s: codec %s cannot be recorded", feed.feed_id, receiver.codec)
            return
        path = self.directory / f"{feed.feed_id}.{file_extension(receiver.codec)}"
        if path.name in self.files_by_name:
            return
        recorder = FeedRecorder(receiver, path, feed_id=feed.feed_id, uid=feed.uid, listener=self,
                                loop=asyncio.get_running_loop())
        self.recorders_by_feed[feed.feed_id] = recorder
        recorder.start()

    def finish_feed(self, feed_id: str) -> None:
        """The feed ended (unpublished, participant left): its file is finalized in the background."""
        recorder = self.recorders_by_feed.pop(feed_id, None)
        if recorder is not None:
            task = asyncio.create_task(self._finish(recorder), name=f"record-finish-{feed_id}")
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _finish(self, recorder: FeedRecorder) -> None:
        stats = await recorder.finish()
        if stats.frames or stats.error:
            self.files_by_name[stats.name] = self._file_entry(recorder, stats, final=True)
        await self.service.save(self)

    def _file_entry(self, recorder: FeedRecorder, stats: FileStats, *, final: bool) -> dict[str, Any]:
        state = "failed" if stats.error else ("complete" if final else "recording")
        return {
            "name": stats.name,
            "feed_id": recorder.feed_id,
            "uid": recorder.uid,
            "kind": stats.kind,
            "codec": stats.codec,
            "start_offset_ms": round((stats.started_at - self.started_at) * 1000) if stats.started_at else 0,
            "started_at": stats.started_at,
            "duration_ms": stats.duration_ms,
            "size": stats.size,
            "frames": stats.frames,
            "state": state,
            "error": stats.error,
            "drops": dict(stats.drops),
            "layer_switches": recorder.layer_switches,
        }

    # -- FeedRecorderListener (on the loop) --------------------------------------------------------------

    def on_recorder_file_opened(self, recorder: FeedRecorder) -> None:
        """Stores the manifest with the new file at once: after a crash GET still lists it."""
        self.service.spawn(self.service.save(self), f"record-save-{self.recording_id}")

    def on_recorder_failed(self, recorder: FeedRecorder, error: str) -> None:
        """Disk full or unwritable: the recording stops (state failed), the session is untouched."""
        if self.state != "recording":
            return
        self.error = f"{recorder.path.name}: {error}"
        self.service.webhooks.emit(self.session.cid, "recording_failed",
                                   {"sid": self.session.sid, "recording_id": self.recording_id,
                                    "error": self.error})
        self.service.spawn(self.stop("failed"), f"record-fail-{self.recording_id}")

    # -- stop --------------------------------------------------------------------------------------------

    async def stop(self, state: str = "stopped") -> RecordingRecord:
        """Finalizes every file, persists the manifest, tells the session; idempotent (same result)."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(state), name=f"record-stop-{self.recording_id}")
        return await asyncio.shield(self._stop_task)

    async def _stop(self, state: str) -> RecordingRecord:
        self.state = "stopping"
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoint_task
            self._checkpoint_task = None
        for feed_id in list(self.recorders_by_feed):
            self.finish_feed(feed_id)
        while self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        self.state = state
        self.stopped_at = time.time()
        record = self.to_record()
        await self.service.on_recording_stopped(self, record)
        return record

    def to_record(self) -> RecordingRecord:
        live = {r.path.name: self._file_entry(r, r.file_stats, final=False)
                for r in self.recorders_by_feed.values() if r.file_stats.started_at}
        merged = {**self.files_by_name, **live}.values()
        files = sorted(merged, key=lambda f: (f["start_offset_ms"], f["name"]))
        return RecordingRecord(self.recording_id, self.session.cid, self.session.sid, self.state,
                               self.started_at, self.stopped_at, self.feed_ids, tuple(files), self.error)


class SessionWatcher:
    """Per session with recordings: a SessionObserver and a MediaObserver forwarding to its recordings."""

    def __init__(self, service: RecordingService, session: Session) -> None:
        self.service = service
        self.session = session

    def recordings(self) -> list[Recording]:
        return [r for r in self.service.recordings_by_id.values() if r.session is self.session]

    def on_media_feed_receiver(self, feed: Feed, receiver: Receiver) -> None:
        for recording in self.recordings():
            recording.add_feed(feed, receiver)

    def on_media_closed(self) -> None:
        for recording in self.recordings():
            self.service.spawn(recording.stop(), f"record-stop-{recording.recording_id}")

    def on_participant_added(self, session: Session, participant: Participant) -> None:
        """Nothing to do: its feeds are recorded when they get a receiver."""

    def on_feed_removed(self, session: Session, feed: Feed) -> None:
        for recording in self.recordings():
            recording.finish_feed(feed.feed_id)

    def on_participant_removed(self, session: Session, participant: Participant) -> None:
        """On leave its feeds were removed first; on session end they were not, so finish them here."""
        for recording in self.recordings():
            for feed_id, recorder in list(recording.recorders_by_feed.items()):
                if recorder.uid == participant.uid:
                    recording.finish_feed(feed_id)


class RecordingService:
    """All live recordings of the server; `close()` (before the sessions end) finalizes every file."""

    def __init__(self, store: Store, webhooks: Webhooks, data_dir: Path) -> None:
        self.store = store
        self.webhooks = webhooks
        self.root = Path(data_dir) / "recordings"
        self.recordings_by_id: dict[str, Recording] = {}
        self._watchers: dict[int, SessionWatcher] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    async def open(self) -> None:
        count = await self.store.interrupt_recordings()
        if count:
            log.warning("%d recording(s) were cut short by the previous run; marked interrupted", count)

    async def start(self, session: Session, feed_ids: tuple[str, ...] | None) -> Recording:
        """Creates the directory (off the loop), starts recording the covered feeds, tells the session."""
        if self.closed:
            raise Conflict("server is shutting down")
        media = session.media
        if media is None or session.closed:
            raise Conflict("session has no media to record")
        for feed_id in feed_ids or ():
            if feed_id not in session.feeds_by_id:
                raise NotFound(f"feed {feed_id} is not in the session")
        directory = self.root / new_recording_id()
        await asyncio.to_thread(directory.mkdir, mode=0o700, parents=True)
        if session.closed:
            raise Conflict("session has already ended")
        recording = Recording(self, session, feed_ids, directory)
        self.recordings_by_id[recording.recording_id] = recording
        self._watch(session)
        for feed_id, receiver in list(media.receivers_by_feed.items()):
            feed = session.feeds_by_id.get(feed_id)
            if feed is not None:
                recording.add_feed(feed, receiver)
        await self.save(recording)
        recording.start_checkpoints()
        session.recording = True
        self._tell(session, {"type": "recording", "state": "started", "recording_id": recording.recording_id})
        self.webhooks.emit(session.cid, "recording_started",
                           {"sid": session.sid, "recording_id": recording.recording_id})
        log.info("recording started", extra={"sid": session.sid, "recording_id": recording.recording_id})
        return recording

    def _watch(self, session: Session) -> None:
        if id(session) in self._watchers or session.media is None:
            return
        watcher = SessionWatcher(self, session)
        self._watchers[id(session)] = watcher
        session.observers.append(watcher)
        session.media.media_observers.append(watcher)

    def _unwatch(self, session: Session) -> None:
        watcher = self._watchers.pop(id(session), None)
        if watcher is None:
            return
        with contextlib.suppress(ValueError):
            session.observers.remove(watcher)
        if session.media is not None:
            with contextlib.suppress(ValueError):
                session.media.media_observers.remove(watcher)

    def live(self, cid: str, recording_id: str) -> Recording | None:
        recording = self.recordings_by_id.get(recording_id)
        return recording if recording is not None and recording.session.cid == cid else None

    async def stop(self, cid: str, sid: str, recording_id: str) -> RecordingRecord:
        """Stops a live recording of (cid, sid); a finished one answers its stored record."""
        recording = self.live(cid, recording_id)
        if recording is not None and recording.session.sid == sid:
            return await recording.stop()
        record = await self.store.get_recording(cid, recording_id)
        if record is None or record.sid != sid:
            raise NotFound(f"recording {recording_id} does not exist")
        return record

    async def get(self, cid: str, recording_id: str) -> RecordingRecord:
        recording = self.live(cid, recording_id)
        if recording is not None:
            return recording.to_record()
        record = await self.store.get_recording(cid, recording_id)
        if record is None:
            raise NotFound(f"recording {recording_id} does not exist")
        return record

    async def list(self, cid: str) -> list[RecordingRecord]:
        stored = {r.recording_id: r for r in await self.store.list_recordings(cid)}
        for recording in self.recordings_by_id.values():
            if recording.session.cid == cid:
                stored[recording.recording_id] = recording.to_record()
        return sorted(stored.values(), key=lambda r: (r.started_at, r.recording_id))

    def file_path(self, record: RecordingRecord, name: str) -> Path:
        """The path of a file the manifest lists (never a name from the URL used as a path)."""
        if not any(f.get("name") == name for f in record.files):
            raise NotFound(f"recording {record.recording_id} has no file {name}")
        return self.root / record.recording_id / name

    async def save(self, recording: Recording) -> None:
        await self.store.save_recording(recording.to_record())

    async def on_recording_stopped(self, recording: Recording, record: RecordingRecord) -> None:
        session = recording.session
        self.recordings_by_id.pop(recording.recording_id, None)
        await self.store.save_recording(record)
        still = any(r.session is session for r in self.recordings_by_id.values())
        session.recording = still
        if not still:
            self._unwatch(session)
        message: dict[str, Any] = {"type": "recording", "state": record.state,
                                   "recording_id": recording.recording_id}
        if record.error:
            message["error"] = record.error
        self._tell(session, message)
        self.webhooks.emit(session.cid, "recording_finished", {"sid": session.sid, **recording_wire(record)})
        log.info("recording %s", record.state, extra={"recording_id": record.recording_id})

    @staticmethod
    def _tell(session: Session, message: dict[str, Any]) -> None:
        for participant in list(session.participants_by_uid.values()):
            participant.send(message)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Runs `coro` as a task owned by the service (awaited in `close`)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Server shutdown: stops every recording (files final, manifests stored); idempotent."""
        self.closed = True
        recordings = list(self.recordings_by_id.values())
        await asyncio.gather(*(r.stop() for r in recordings), return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def recording_wire(record: RecordingRecord) -> dict[str, Any]:
    """The REST and webhook view of a recording: metadata plus the manifest (`files`)."""
    return {
        "recording_id": record.recording_id,
        "sid": record.sid,
        "state": record.state,
        "started_at": record.started_at,
        "stopped_at": record.stopped_at,
        "feed_ids": list(record.feed_ids) if record.feed_ids is not None else None,
        "files": list(record.files),
        "error": record.error,
    }
