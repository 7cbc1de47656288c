"""Speech-to-text through the OpenAI audio API (any OpenAI-compatible server).

Contract of `OpenAITranscriber.transcribe(path)`:
- The recording is prepared with `audio.prepare`: 16 kHz mono Opus/Ogg (or MP3) at a low
  bitrate, so even a 3-hour call usually fits one upload. A stereo recording is split into
  its two channels (one party each) and every channel is transcribed on its own, the two
  side by side, each on its own thread;
  segments carry the channel ("left"/"right") as speaker; a "stereo" file whose channels
  are the same audio is treated as mono. A mono recording goes to `diarize_model`
  when one is configured (segments carry its speaker labels), else to the main model.
- A track longer than one upload allows (`upload_limit_bytes`, 25 MB by default, at the
  chosen bitrate) or than the model accepts (gpt-4o models: ~1400 s) is cut into chunks that
  overlap by `overlap_seconds`; the pieces are stitched back in time order and the overlap
  is counted once (`stitch`).
- Response formats asked for: `whisper-1` (and other Whisper servers) `verbose_json` with
  timed segments; `gpt-4o-transcribe` / `gpt-4o-mini-transcribe` `json` (text only: one
  segment per chunk, `Transcript.timed` False); `*-diarize` `diarized_json` with
  `chunking_strategy=auto` (no prompt). The vocabulary prompt goes to every model that accepts
  one. Whatever shape comes back is read (`transcription_answer.read_answer`).
- Every request holds a slot of `limit` (`openai_limit.RequestLimit`, shared with the
  analysis and every worker) while it is in flight, and only then; no limit when None.
- The audio seconds sent and any tokens the API reports are returned for cost accounting.
  Each chunk's answer is kept beside the recording (`PieceCache`) until the whole call is
  transcribed, so a retry after a failed chunk pays only for the chunks still missing.
- `max_seconds` (`poller.max_call_minutes`): only the first `max_seconds` of a recording are
  decoded and sent, whatever its note claims; `Transcript.cut_at_seconds` says so.
  `max_chunk_seconds` bounds one upload further (the daily budget is checked per upload).
- With a `meter` (`domain.UploadMeter`, the daily budget), every upload is reserved before
  it is sent (`errors.BudgetReached`: nothing more is sent, the pieces already answered stay
  in the cache for the next attempt), turned into spend after its answer, released when it
  failed; pieces taken from the cache are not paid again. `Transcript.metered` is then True.
- With `keep` (a directory), the prepared chunks the transcript was made from are moved there
  once every chunk is answered, with their index (`clip_files.keep`): the quote clips' audio.
- SDK errors are mapped by `map_openai_error`; an undecodable recording is permanent. When a
  channel fails, the other sends no further chunk (the one in flight is kept in the cache)
  and the first error is raised once both have stopped. The result does not depend on
  which channel finished first: segments in time order, texts in channel order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import openai
from openai.types import AudioResponseFormat

from salesbot_poller.config import Endpoint
from salesbot_poller.domain import Segment, Transcript, UploadMeter
from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.services import clip_files
from salesbot_poller.services.audio import Chunk, UploadFormat, channels_identical, chunk_seconds_for, prepare, probe
from salesbot_poller.services.openai_errors import map_openai_error
from salesbot_poller.services.openai_limit import RequestLimit
from salesbot_poller.services.transcription_answer import read_answer

log = logging.getLogger(__name__)

UPLOAD_LIMIT_BYTES = 25 * 1024 * 1024
# gpt-4o transcription models reject audio over ~1400 s: stay clear of it.
GPT4O_MAX_SECONDS = 1380.0
CHANNEL_SPEAKERS = {0: "left", 1: "right", None: ""}
_MIME = {"ogg": "audio/ogg", "mp3": "audio/mpeg"}


@dataclass(frozen=True)
class ModelSpec:
    response_format: AudioResponseFormat
    max_seconds: float | None
    accepts_prompt: bool
    diarized: bool = False


def model_spec(model: str) -> ModelSpec:
    """What a transcription model accepts and returns (by its name)."""
    if "diarize" in model:
        return ModelSpec("diarized_json", GPT4O_MAX_SECONDS, accepts_prompt=False, diarized=True)
    if model.startswith(("gpt-4o", "gpt-transcribe")):
        return ModelSpec("json", GPT4O_MAX_SECONDS, accepts_prompt=True)
    return ModelSpec("verbose_json", None, accepts_prompt=True)  # whisper-1, Groq/local Whisper


@dataclass(frozen=True)
class Piece:
    """What the API returned for one chunk; segment times relative to the chunk."""

    chunk: Chunk
    text: str
    segments: list[Segment]
    timed: bool
    input_tokens: int = 0
    output_tokens: int = 0


class OpenAITranscriber:
    """Implements `domain.Transcriber`."""

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        language: str,
        *,
        diarize_model: str = "",
        prompt: str = "",
        upload_format: UploadFormat = "ogg",
        bitrate: int = 12000,
        overlap_seconds: float = 2.0,
        upload_limit_bytes: int = UPLOAD_LIMIT_BYTES,
        work_dir: Path | None = None,
        limit: RequestLimit | None = None,
        max_seconds: float | None = None,
        max_chunk_seconds: float | None = None,
        endpoint: Endpoint | None = None,
    ) -> None:
        self._client = client
        self._endpoint = endpoint  # named in errors (`openai_errors`)
        self._model = model
        self._language = language
        self._diarize_model = diarize_model
        self._prompt = prompt
        self._format: UploadFormat = upload_format
        self._bitrate = bitrate
        self._overlap = overlap_seconds
        self.upload_limit_bytes = upload_limit_bytes
        self._work_dir = work_dir
        self.limit = limit
        self._slot: AbstractContextManager[None] = limit if limit is not None else nullcontext()
        self.max_seconds = max_seconds
        self._max_chunk = max_chunk_seconds

    def transcribe(self, audio: Path, meter: UploadMeter | None = None, keep: Path | None = None) -> Transcript:
        stereo = probe(audio).channels >= 2
        if stereo and channels_identical(audio):
            log.info("%s: both channels carry the same audio: transcribed as mono", audio.name)
            stereo = False
        model = self._diarize_model if self._diarize_model and not stereo else self._model
        spec = model_spec(model)
        chunk_seconds = chunk_seconds_for(self.upload_limit_bytes, self._bitrate, spec.max_seconds)
        if self._max_chunk is not None:
            chunk_seconds = min(chunk_seconds, self._max_chunk)
        with tempfile.TemporaryDirectory(prefix=f"{audio.stem}-", dir=self._work_dir or audio.parent) as tmp:
            prepared = prepare(
                audio,
                Path(tmp),
                split_channels=stereo,
                chunk_seconds=chunk_seconds,
                overlap_seconds=min(self._overlap, chunk_seconds / 4),
                fmt=self._format,
                bitrate=self._bitrate,
                max_seconds=self.max_seconds,
            )
            cache = PieceCache(audio.with_name(audio.name + ".pieces.json"), f"{model}|{self._format}|{self._bitrate}")
            tracks = self._send_tracks(prepared.tracks, cache, model, spec, meter)
            if keep is not None:  # the quote clips' audio: these very files, not a second encoding
                try:
                    clip_files.keep(prepared, keep)
                except OSError as exc:  # paid for: the transcript matters more than its clips
                    log.warning("%s: its audio is not kept for clips: %s", audio.name, exc.strerror or exc)
        segments: list[Segment] = []
        texts: list[str] = []
        for pieces in tracks:
            stitched = stitch(pieces, prepared.duration)
            segments.extend(stitched)
            texts.append(" ".join(s.text for s in stitched))
        segments.sort(key=lambda s: (s.start, s.speaker))
        all_pieces = [p for pieces in tracks for p in pieces]
        cache.remove()
        return Transcript(
            text="\n".join(t for t in texts if t).strip(),
            duration_seconds=prepared.duration,
            segments=tuple(segments),
            timed=all(p.timed for p in all_pieces),
            model=model,
            audio_seconds=sum(p.chunk.duration for p in all_pieces),
            input_tokens=sum(p.input_tokens for p in all_pieces),
            output_tokens=sum(p.output_tokens for p in all_pieces),
            metered=meter is not None,
            cut_at_seconds=prepared.duration if prepared.cut else None,
        )

    def _send_tracks(
        self, tracks: list[list[Chunk]], cache: PieceCache, model: str, spec: ModelSpec, meter: UploadMeter | None
    ) -> list[list[Piece]]:
        """Every track's pieces, in track order; the tracks side by side (see the contract)."""

        def piece(chunk: Chunk) -> Piece:
            return cache.get(chunk) or self._paid(chunk, model, spec, cache, meter)

        if len(tracks) == 1:
            return [[piece(chunk) for chunk in tracks[0]]]
        errors: list[BaseException] = []  # in the order they happened
        guard = threading.Lock()

        def send_track(track: list[Chunk]) -> list[Piece]:
            pieces: list[Piece] = []
            try:
                for chunk in track:
                    if errors:  # the call fails anyway: pay for no more chunks
                        break
                    pieces.append(piece(chunk))
            except BaseException as exc:
                with guard:
                    errors.append(exc)
            return pieces

        # Threads, not processes: a channel mostly waits for its HTTP answers. The first one
        # runs on the calling thread (a worker would only wait), the others on threads named
        # after it, so the log says which call a channel belongs to.
        prefix = f"{threading.current_thread().name}-channel"
        with ThreadPoolExecutor(len(tracks) - 1, thread_name_prefix=prefix) as others:
            later = [others.submit(send_track, track) for track in tracks[1:]]
            results = [send_track(tracks[0])]
        results += [future.result() for future in later]  # send_track raises nothing: see errors
        if errors:
            raise errors[0]
        return results

    def _paid(self, chunk: Chunk, model: str, spec: ModelSpec, cache: PieceCache, meter: UploadMeter | None) -> Piece:
        """Send `chunk`, reserved and paid through `meter` when there is one (see the contract)."""
        if meter is None:
            return cache.put(self._send(chunk, model, spec))
        ticket = meter.reserve(chunk.duration, model)  # BudgetReached: nothing is sent
        try:
            piece = self._send(chunk, model, spec)
        except BaseException:
            meter.release(ticket)
            raise
        # Cached first: should the process die before the spend is recorded, the chunk is
        # still never paid again (its reservation is counted as spent on the next attempt).
        cache.put(piece)
        meter.spent(ticket, chunk.duration, piece.input_tokens, piece.output_tokens)
        return piece

    def _send(self, chunk: Chunk, model: str, spec: ModelSpec) -> Piece:
        if chunk.size > self.upload_limit_bytes:  # the plan has headroom; this is a guard
            raise PermanentError(
                f"prepared audio chunk is {chunk.size / 2**20:.1f} MB, over the "
                f"{self.upload_limit_bytes / 2**20:.0f} MB upload limit: lower audio.bitrate_kbps"
            )
        chunking: Literal["auto"] | openai.Omit = "auto" if spec.diarized else openai.omit
        # An open file, not its bytes: the HTTP client streams it, so a 20 MB upload is not
        # held in memory twice (the SDK has retries off, so it never needs to rewind).
        try:
            with chunk.path.open("rb") as handle, self._slot:
                result = self._client.audio.transcriptions.create(
                    file=(chunk.path.name, handle, _MIME[self._format]),
                    model=model,
                    language=self._language or openai.omit,
                    prompt=self._prompt if self._prompt and spec.accepts_prompt else openai.omit,
                    response_format=spec.response_format,
                    chunking_strategy=chunking,
                )
        except openai.OpenAIError as exc:
            setting = "openai.diarize_model" if model == self._diarize_model else "openai.transcription_model"
            raise map_openai_error(exc, "transcription", model, self._endpoint, setting) from None
        except ValueError:  # the SDK hands a body that is not JSON through as JSONDecodeError
            raise TransientError(f"OpenAI transcription ({model}): malformed answer (not JSON)") from None
        return parse_response(result, chunk)


class PieceCache:
    """The chunks of a recording already transcribed, kept beside it until the whole call
    is done: when chunk 3 of 5 fails, the next attempt does not pay for 1 and 2 again.
    Thread-safe: the two channels of a call put their pieces at the same time."""

    def __init__(self, path: Path, settings: str) -> None:
        self._path = path
        # One writer at a time: the dict must not change while it is serialised, and the
        # two channels would write the same ".part" file.
        self._lock = threading.Lock()
        self._settings = settings  # another model or format means other chunks
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self._pieces: dict[str, Any] = data if isinstance(data, dict) else {}

    def _key(self, chunk: Chunk) -> str:
        return f"{self._settings}|{chunk.channel}|{chunk.index}|{chunk.offset:.3f}|{chunk.duration:.3f}"

    def get(self, chunk: Chunk) -> Piece | None:
        with self._lock:
            raw = self._pieces.get(self._key(chunk))
        if not isinstance(raw, dict):
            return None
        segments = [Segment(float(a), float(b), str(t), str(s)) for a, b, t, s in raw["segments"]]
        return Piece(chunk, raw["text"], segments, bool(raw["timed"]), int(raw["in"]), int(raw["out"]))

    def put(self, piece: Piece) -> Piece:
        entry = {
            "text": piece.text,
            "segments": [[s.start, s.end, s.text, s.speaker] for s in piece.segments],
            "timed": piece.timed,
            "in": piece.input_tokens,
            "out": piece.output_tokens,
        }
        part = self._path.with_name(self._path.name + ".part")
        with self._lock:
            self._pieces[self._key(piece.chunk)] = entry
            part.write_text(json.dumps(self._pieces, ensure_ascii=False), encoding="utf-8")
            os.replace(part, self._path)
        return piece

    def remove(self) -> None:
        with self._lock:
            self._path.unlink(missing_ok=True)


def parse_response(result: object, chunk: Chunk) -> Piece:
    """A `Piece` from any transcription answer, whatever format was asked for (`read_answer`)."""
    heard = read_answer(result, chunk.duration, CHANNEL_SPEAKERS[chunk.channel])
    return Piece(chunk, heard.text, heard.segments, heard.timed, heard.input_tokens, heard.output_tokens)


def stitch(pieces: list[Piece], duration: float) -> list[Segment]:
    """One track's chunk results as segments in recording time, the overlaps counted once.

    Consecutive chunks overlap; the cut between two chunks is the middle of their overlap.
    A timed segment is kept by the chunk whose span [cut before, cut after) holds its start,
    so an utterance that crosses a chunk's end is taken from the chunk that heard it begin
    (the next chunk hears it clipped, starting before the cut, and drops it). Untimed
    chunks (json models) become one segment [cut_k, cut_k+1), and the words the previous
    chunk already ended with are removed from the start of the text.
    """
    segments: list[Segment] = []
    previous_text = ""
    for k, piece in enumerate(pieces):
        chunk = piece.chunk
        lo = 0.0 if k == 0 else _cut(pieces[k - 1].chunk, chunk)
        hi = duration if k == len(pieces) - 1 else _cut(chunk, pieces[k + 1].chunk)
        if piece.timed:
            for s in piece.segments:
                start = chunk.offset + s.start
                if lo <= start < hi:
                    segments.append(Segment(start, min(chunk.offset + s.end, duration), s.text, s.speaker))
        else:
            text = drop_repeated_words(previous_text, piece.text)
            previous_text = piece.text
            speaker = piece.segments[0].speaker if piece.segments else ""
            if text:
                segments.append(Segment(lo, hi, text, speaker))
    return segments


def _cut(before: Chunk, after: Chunk) -> float:
    overlap = max(0.0, before.offset + before.duration - after.offset)
    return after.offset + overlap / 2


_WORD = re.compile(r"[\w'-]+")


def _norm(word: str) -> str:
    found = _WORD.findall(word.lower().replace("ё", "е"))
    return found[0] if found else ""


def drop_repeated_words(previous: str, text: str, max_words: int = 40, min_words: int = 2) -> str:
    """`text` without its first words when `previous` ends with the same words (the overlap
    of two chunks heard twice). At least `min_words` must match, so a lone "да" stays."""
    before = [_norm(w) for w in previous.split()][-max_words:]
    words = text.split()
    normed = [_norm(w) for w in words[:max_words]]
    for n in range(min(len(before), len(normed)), min_words - 1, -1):
        if before[-n:] == normed[:n] and all(before[-n:]):
            return " ".join(words[n:])
    return text
