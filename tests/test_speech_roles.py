"""Who said what, proven from the audio: the fake OpenAI server "hears" the tones in each
upload (`tone_runs`) and answers with text derived from them, so the channel -> role mapping,
the time-ordered merge and each model's response shape are checked end to end through the
real `openai` SDK, never assumed."""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest

from salesbot_poller.config import AudioConfig, parse_config
from salesbot_poller.errors import ConfigError
from salesbot_poller.services.dialogue import build_dialogue, manager_channel, metrics_block, metrics_line
from salesbot_poller.services.speech import OpenAITranscriber
from tests.conftest import OPENAI_KEY, Servers
from tests.fakes import make_turns_mp3, tone_runs

# Manager on the left channel (low tone, asks questions), client on the right (high tone).
LEFT = [(0.0, 2.0, 440.0), (6.0, 8.0, 440.0)]
RIGHT = [(2.5, 5.0, 880.0), (7.0, 9.0, 880.0)]  # the second one starts while the left talks


def words_for(hz: float) -> str:
    return "Низкий тон?" if hz < 660 else "Высокий тон."


def untimed(line: str) -> str:
    """A dialogue line without its `[mm:ss] ` time."""
    return re.sub(r"^\[\d\d:\d\d\] ", "", line)


def heard_segments(data: bytes, filename: str, fields: dict[str, str]) -> list[tuple[float, float, str]]:
    return [(start, end, words_for(hz)) for start, end, hz in tone_runs(data)]


def heard_speakers(data: bytes, filename: str, fields: dict[str, str]) -> list[tuple[float, float, str, str]]:
    return [(start, end, "A" if hz < 660 else "B", words_for(hz)) for start, end, hz in tone_runs(data)]


def client(servers: Servers) -> openai.OpenAI:
    return openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{servers.openai.base_url}/v1", max_retries=0, timeout=30)


def recording(servers: Servers, right: bool = True) -> Path:
    """The stereo call, or a mono one with the same turns taken one after another."""
    path = servers.tmp / "call.mp3"
    mono_turns = [*LEFT, (2.5, 5.0, 880.0), (8.5, 9.5, 880.0)]
    path.write_bytes(make_turns_mp3(10, LEFT, RIGHT) if right else make_turns_mp3(10, mono_turns))
    return path


def test_stereo_channels_become_roles_merged_in_time_order(servers: Servers) -> None:
    servers.openai.segments_fn = heard_segments
    transcript = OpenAITranscriber(client(servers), "whisper-1", "ru").transcribe(recording(servers))

    uploads = servers.openai.transcriptions
    # The channels are sent side by side: either may arrive first.
    assert sorted(u["filename"] for u in uploads) == ["call-ch0-000.ogg", "call-ch1-000.ogg"]
    assert all(u["fields"]["response_format"] == "verbose_json" for u in uploads)
    assert {s.speaker for s in transcript.segments} == {"left", "right"}
    assert transcript.audio_seconds == pytest.approx(20.0, abs=0.1)  # two channels of 10 s

    text, metrics = build_dialogue(transcript, "left", "in")
    assert text.splitlines()[0].startswith("[00:00] "), "timed segments: each line starts with its time"
    assert [untimed(line) for line in text.splitlines()] == [
        "Менеджер: Низкий тон?",
        "Клиент: Высокий тон.",
        "Менеджер: Низкий тон?",
        "Клиент: Высокий тон.",
    ]
    assert metrics is not None
    assert metrics.manager_share == pytest.approx(4 / 8.5, abs=0.03)
    assert metrics.client_share == pytest.approx(4.5 / 8.5, abs=0.03)
    assert metrics.silence_share == pytest.approx(2.5 / 10, abs=0.03)
    assert metrics.longest_monologue == pytest.approx(2.5, abs=0.15) and metrics.longest_monologue_role == "client"
    assert (metrics.interruptions_by_client, metrics.interruptions_by_manager) == (1, 0)
    assert metrics.manager_questions == 2

    swapped, _ = build_dialogue(transcript, "right", "in")
    assert untimed(swapped.splitlines()[0]) == "Клиент: Низкий тон?", "the manager channel is configurable"
    assert "Менеджер 47% · Клиент 53%" in metrics_line(metrics)
    assert "вопросов задал менеджер: 2" in metrics_block(metrics)


def test_manager_channel_most_specific_override_wins() -> None:
    audio = AudioConfig(
        manager_channel="left",
        manager_channel_by_direction={"out": "right"},
        manager_channel_by_source={"Sipuni": "right", "Mango:in": "right", "Mango": "left"},
    )
    assert manager_channel(audio, "Other", "in") == "left"
    assert manager_channel(audio, "Other", "out") == "right"
    assert manager_channel(audio, "Sipuni", "in") == "right"
    assert manager_channel(audio, "Mango", "in") == "right"
    assert manager_channel(audio, "Mango", "out") == "left", "a source entry beats the direction"
    assert manager_channel(audio, None, "in") == "left"


@pytest.mark.parametrize(("direction", "first_line"), [("in", "Менеджер: Низкий тон?"), ("out", "Клиент: Низкий тон?")])
def test_mono_goes_to_the_diarizing_model_and_the_first_speaker_decides(
    servers: Servers, direction: str, first_line: str
) -> None:
    servers.openai.diarize_fn = heard_speakers
    transcriber = OpenAITranscriber(
        client(servers), "whisper-1", "ru", diarize_model="gpt-4o-transcribe-diarize", prompt="ООО Ромашка"
    )
    transcript = transcriber.transcribe(recording(servers, right=False))

    (upload,) = servers.openai.transcriptions
    fields = upload["fields"]
    assert fields["model"] == "gpt-4o-transcribe-diarize" and fields["response_format"] == "diarized_json"
    assert fields["chunking_strategy"] == "auto" and "prompt" not in fields, "the diarizing model takes no prompt"
    assert transcript.input_tokens > 0 and transcript.output_tokens > 0
    text, metrics = build_dialogue(transcript, "left", direction)
    assert untimed(text.splitlines()[0]) == first_line and len(text.splitlines()) == 4
    assert metrics is not None and metrics.silence_share is not None


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
def test_json_only_models_give_one_untimed_segment_per_channel_chunk(servers: Servers, model: str) -> None:
    servers.openai.transcribe_fn = lambda data, name, fields: " ".join(words_for(hz) for _, _, hz in tone_runs(data))
    transcriber = OpenAITranscriber(client(servers), model, "ru", prompt="ООО Ромашка, тариф Бизнес")
    transcript = transcriber.transcribe(recording(servers))

    assert all(u["fields"]["response_format"] == "json" for u in servers.openai.transcriptions)
    assert all(u["fields"]["prompt"] == "ООО Ромашка, тариф Бизнес" for u in servers.openai.transcriptions)
    assert not transcript.timed and transcript.input_tokens > 0
    text, metrics = build_dialogue(transcript, "left", "in")
    assert text.splitlines() == ["Менеджер: Низкий тон? Низкий тон?", "Клиент: Высокий тон. Высокий тон."], "untimed"
    assert metrics is not None and metrics.silence_share is None and metrics.interruptions_by_client is None
    assert metrics.manager_questions == 2 and "тишина" not in metrics_line(metrics)


def test_a_mono_call_without_diarization_has_no_roles(servers: Servers) -> None:
    servers.openai.segments_fn = heard_segments
    transcript = OpenAITranscriber(client(servers), "whisper-1", "ru").transcribe(recording(servers, right=False))
    assert len(servers.openai.transcriptions) == 1
    assert build_dialogue(transcript, "left", "in") == (transcript.text, None)
    assert transcript.text == "Низкий тон? Высокий тон. Низкий тон? Высокий тон."


def test_audio_config_is_validated_and_settable_from_the_environment() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"audio": {"manager_channel": "middle", "manager_channel_by_direction": {"sideways": "left"}}}, {})
    problems = "\n".join(caught.value.problems)
    assert "audio.manager_channel:" in problems and "audio.manager_channel_by_direction.sideways" in problems
    config = parse_config({}, {"SALESBOT_AUDIO_MANAGER_CHANNEL": "right"}, require_secrets=False)
    assert config.audio.manager_channel == "right" and config.storage.max_recording_mb == 300
