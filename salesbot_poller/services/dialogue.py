"""Who said what: transcript segments as a dialogue with roles, and conversation metrics.

Contract:
- `manager_channel(audio, source, direction)`: the stereo channel of the manager. Most
  specific first: `manager_channel_by_source["<source>:<in|out>"]`, then
  `manager_channel_by_source["<source>"]`, then `manager_channel_by_direction[direction]`,
  then `manager_channel` (default "left").
- `build_dialogue(transcript, channel, direction)` returns the text for the analysis
  ("Менеджер: …" / "Клиент: …" lines in time order, one line per turn, each starting with
  its time `[mm:ss] ` when the transcript has timestamps) and the metrics, or
  the plain text and None when nobody knows who spoke (mono without diarization).
  Diarized speakers: the first to speak is the manager on an incoming call (they answer)
  and the client on an outgoing one (they pick up); every other label is the other side.
- Metrics (`conversation_metrics`): talk share per side (of the speech time; by text length
  when the transcript has no timestamps), silence share, the longest monologue (one side
  talking with the other silent in between), interruptions (a side starts while the other
  is still talking, at least `INTERRUPT_SECONDS` before they stop), questions the manager
  asked (runs of "?" in the manager's words).
- `metrics_line` (Telegram) and `metrics_block` (analysis prompt) render them in Russian.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from salesbot_poller.config import AudioConfig, Channel
from salesbot_poller.domain import ConversationMetrics, Segment, Transcript
from salesbot_poller.services.quotes import clock

Role = Literal["manager", "client"]
ROLE_RU: dict[str, str] = {"manager": "Менеджер", "client": "Клиент"}
INTERRUPT_SECONDS = 0.5  # an overlap shorter than this is a turn change, not an interruption


@dataclass(frozen=True)
class Turn:
    role: Role
    start: float
    end: float
    text: str


def manager_channel(audio: AudioConfig, source: str | None, direction: str) -> Channel:
    """The manager's stereo channel for a call; see the module contract."""
    by_source = audio.manager_channel_by_source
    if source and f"{source}:{direction}" in by_source:
        return by_source[f"{source}:{direction}"]
    if source and source in by_source:
        return by_source[source]
    if direction in ("in", "out") and direction in audio.manager_channel_by_direction:
        return audio.manager_channel_by_direction[direction]
    return audio.manager_channel


def assign_roles(segments: tuple[Segment, ...], channel: Channel, direction: str) -> list[Turn] | None:
    """Segments with roles, in time order; None when the segments name no speakers."""
    ordered = sorted((s for s in segments if s.text.strip()), key=lambda s: (s.start, s.end))
    speakers = {s.speaker for s in ordered}
    if not ordered or "" in speakers:
        return None
    if speakers <= {"left", "right"}:
        roles: dict[str, Role] = {channel: "manager", "right" if channel == "left" else "left": "client"}
    else:  # diarized labels
        first: Role = "manager" if direction == "in" else "client"
        other: Role = "client" if first == "manager" else "manager"
        roles = {label: (first if label == ordered[0].speaker else other) for label in speakers}
    return [Turn(roles[s.speaker], s.start, s.end, s.text.strip()) for s in ordered]


def render_dialogue(turns: list[Turn], timed: bool = False) -> str:
    """One line per turn; consecutive segments of one side are joined. With `timed` each line
    starts with its time in the call, `[mm:ss] ` (the card shows a quote's time from it)."""
    lines: list[tuple[Role, float, list[str]]] = []
    for turn in turns:
        if lines and lines[-1][0] == turn.role:
            lines[-1][2].append(turn.text)
        else:
            lines.append((turn.role, turn.start, [turn.text]))
    return "\n".join(
        f"{_stamp(start) if timed else ''}{ROLE_RU[role]}: {' '.join(texts)}" for role, start, texts in lines
    )


def _stamp(start: float) -> str:
    return f"[{clock(int(start))}] "


def _union(intervals: list[tuple[float, float]]) -> float:
    total, current_start, current_end = 0.0, None, 0.0
    for start, end in sorted(intervals):
        if current_start is None or start > current_end:
            if current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_start is not None:
        total += current_end - current_start
    return total


def conversation_metrics(turns: list[Turn], duration: float, timed: bool = True) -> ConversationMetrics:
    """See the module contract. `duration` is the recording's, in seconds."""
    questions = sum(len(re.findall(r"\?+", t.text)) for t in turns if t.role == "manager")
    if not timed:
        chars = {role: sum(len(t.text) for t in turns if t.role == role) for role in ("manager", "client")}
        total_chars = sum(chars.values()) or 1
        return ConversationMetrics(
            duration=duration,
            manager_share=chars["manager"] / total_chars,
            client_share=chars["client"] / total_chars,
            silence_share=None,
            longest_monologue=None,
            longest_monologue_role=None,
            interruptions_by_manager=None,
            interruptions_by_client=None,
            manager_questions=questions,
        )
    talk = {role: _union([(t.start, t.end) for t in turns if t.role == role]) for role in ("manager", "client")}
    speech = sum(talk.values()) or 1.0
    spoken = _union([(t.start, t.end) for t in turns])
    longest, longest_role = 0.0, None
    run_start, run_role, run_end = 0.0, None, 0.0
    interruptions = {"manager": 0, "client": 0}
    talking_until = {"manager": 0.0, "client": 0.0}  # latest end of each side so far
    for turn in turns:
        if turn.role != run_role:
            run_start, run_role, run_end = turn.start, turn.role, turn.end
        run_end = max(run_end, turn.end)
        if run_end - run_start > longest:
            longest, longest_role = run_end - run_start, run_role
        # Turns are in start order: the other side is interrupted when it was still talking
        # well past this start.
        other = "client" if turn.role == "manager" else "manager"
        if turn.start < talking_until[other] - INTERRUPT_SECONDS:
            interruptions[turn.role] += 1
        talking_until[turn.role] = max(talking_until[turn.role], turn.end)
    return ConversationMetrics(
        duration=duration,
        manager_share=talk["manager"] / speech,
        client_share=talk["client"] / speech,
        silence_share=max(0.0, 1 - spoken / duration) if duration > 0 else 0.0,
        longest_monologue=longest,
        longest_monologue_role=longest_role,
        interruptions_by_manager=interruptions["manager"],
        interruptions_by_client=interruptions["client"],
        manager_questions=questions,
    )


def build_dialogue(transcript: Transcript, channel: Channel, direction: str) -> tuple[str, ConversationMetrics | None]:
    """The transcript text for the analysis, and the metrics when roles are known."""
    turns = assign_roles(transcript.segments, channel, direction)
    if turns is None:
        return transcript.text, None
    duration = transcript.duration_seconds or max((t.end for t in turns), default=0.0)
    return render_dialogue(turns, transcript.timed), conversation_metrics(turns, duration, transcript.timed)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _pct(share: float) -> str:
    return f"{round(share * 100)}%"


def metrics_line(m: ConversationMetrics) -> str:
    """One compact plain-text line for the Telegram card (no HTML in it)."""
    parts = [f"🗣 Менеджер {_pct(m.manager_share)} · Клиент {_pct(m.client_share)}"]
    if m.silence_share is not None:
        parts.append(f"тишина {_pct(m.silence_share)}")
    if m.longest_monologue is not None and m.longest_monologue_role:
        who = "менеджера" if m.longest_monologue_role == "manager" else "клиента"
        parts.append(f"монолог {who} {_clock(m.longest_monologue)}")
    if m.interruptions_by_manager is not None:
        parts.append(f"перебил клиента {m.interruptions_by_manager}")
    parts.append(f"вопросов {m.manager_questions}")
    return " · ".join(parts)


def metrics_block(m: ConversationMetrics) -> str:
    """The metrics as lines for the analysis prompt."""
    lines = [
        "Метрики разговора (по разметке времени расшифровки):",
        f"- доля речи: менеджер {_pct(m.manager_share)}, клиент {_pct(m.client_share)}",
    ]
    if m.silence_share is not None:
        lines.append(f"- тишина: {_pct(m.silence_share)} звонка")
    if m.longest_monologue is not None and m.longest_monologue_role:
        who = ROLE_RU[m.longest_monologue_role].lower()
        lines.append(f"- самый длинный монолог: {who}, {_clock(m.longest_monologue)}")
    if m.interruptions_by_manager is not None and m.interruptions_by_client is not None:
        lines.append(
            f"- перебивания: менеджер перебил {m.interruptions_by_manager}, клиент перебил {m.interruptions_by_client}"
        )
    lines.append(f"- вопросов задал менеджер: {m.manager_questions}")
    return "\n".join(lines)
