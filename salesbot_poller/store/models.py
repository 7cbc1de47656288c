"""The tables (peewee models) of the store. The application reads rows of them (a `Call` is
a typed row); every query and write goes through a `Store` method."""

from __future__ import annotations

import peewee

from salesbot_poller.domain import Stage

database_proxy = peewee.DatabaseProxy()


class _Model(peewee.Model):
    class Meta:
        database = database_proxy


class Migration(_Model):
    name = peewee.CharField(primary_key=True)
    applied_at = peewee.IntegerField()


class State(_Model):
    key = peewee.CharField(primary_key=True)
    value = peewee.TextField()


class SeenEvent(_Model):
    event_id = peewee.CharField(primary_key=True)
    created_at = peewee.BigIntegerField(null=True)  # amoCRM's: as wide as the parser admits (0014_big_ids)
    seen_at = peewee.IntegerField()
    error = peewee.TextField(null=True)  # why a malformed event could not become a call
    raw_json = peewee.TextField(null=True)  # a set-aside event as read, for `retry --event`


class Call(_Model):
    id = peewee.AutoField()
    event_id = peewee.CharField(unique=True)
    direction = peewee.CharField()  # in / out
    entity_type = peewee.CharField()  # plural
    # What amoCRM gives may pass 2^31 (an id, a hostile time): 64-bit, as the parser admits
    # (SQLite's INTEGER always is; PostgreSQL's INTEGER is widened by 0014_big_ids).
    entity_id = peewee.BigIntegerField()
    note_id = peewee.BigIntegerField()
    event_created_at = peewee.BigIntegerField(index=True)  # indexed in 0011_retention
    first_seen_at = peewee.IntegerField()
    updated_at = peewee.IntegerField()
    stage = peewee.CharField(default=Stage.NEW.value)  # indexed with event_created_at (`QUERY_INDEXES`)
    kind = peewee.CharField(null=True)  # conversation / missed, once the note is read
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.IntegerField(default=0, index=True)
    last_error = peewee.TextField(null=True)
    skip_reason = peewee.TextField(null=True)
    # From the note, and names resolved when it was read.
    duration = peewee.IntegerField(null=True)
    phone = peewee.CharField(null=True)
    # Its normal form (`phones.key`, given by the caller: the store does not parse numbers),
    # so `/find` and `forget --phone` look a number up in the index `call_phone_key`
    # (0024_phone_key). None: not computed yet (`PersonalData.fill_phone_keys` fills it).
    phone_key = peewee.CharField(null=True)
    link = peewee.TextField(null=True)
    call_status = peewee.IntegerField(null=True)
    source = peewee.CharField(null=True)
    responsible_user_id = peewee.BigIntegerField(null=True)
    manager_name = peewee.CharField(null=True)
    entity_name = peewee.CharField(null=True)
    profile = peewee.CharField(null=True)  # the `[[profiles]]` name it got ("" without profiles)
    # Stage artifacts.
    audio_path = peewee.TextField(null=True)
    transcript = peewee.TextField(null=True)
    analysis_json = peewee.TextField(null=True)
    # Before 0007_lanes the call's own message lived here; it is a `Delivery` row now.
    outbox_json = peewee.TextField(null=True)
    message_ids_json = peewee.TextField(null=True)
    notified_at = peewee.IntegerField(null=True)
    # Where the call's own message went (None: telegram.chat_id), and the outgoing call that
    # returned a missed one (0006_delivery).
    chat_id = peewee.CharField(null=True)
    thread_id = peewee.IntegerField(null=True)
    callback_call_id = peewee.IntegerField(null=True)
    metrics_json = peewee.TextField(null=True)  # domain.ConversationMetrics, when roles are known
    retried_at = peewee.IntegerField(null=True)  # `retry` put it back: its 24 h restart here
    claimed_by = peewee.CharField(null=True)  # the worker working it now (0007_lanes)
    claimed_at = peewee.IntegerField(null=True)
    # A missed call alerted only in a storm summary: that summary's delivery key (0009_storm).
    summarised_in = peewee.CharField(null=True)
    # Its personal data was removed (retention or `forget`), and when (0011_retention).
    personal_removed_at = peewee.IntegerField(null=True)
    # A call cleared by `forget`: a keyed hash of its number's last 10 digits, so that a second
    # `forget` of the same number finds it again (the number itself is gone).
    forgotten_as = peewee.CharField(null=True, index=True)
    # The recording was longer than `poller.max_call_minutes`: transcribed up to this minute
    # only (0016_upload_holds); None: transcribed whole.
    cut_minutes = peewee.IntegerField(null=True)


class Delivery(_Model):
    """One message or amoCRM write: a call's own card or alert (key `call:<id>`), a copy to the
    alert chat, the transcript, an escalation, a callback reply, the digest, a note, a task.
    Stored before it is sent; each accepted part's id committed right after (`delivery`)."""

    id = peewee.AutoField()
    key = peewee.CharField(unique=True)  # what and where, e.g. "call:12:card:-1001:5"
    call_id = peewee.IntegerField(null=True, index=True)
    kind = peewee.CharField()
    chat_id = peewee.CharField(null=True)  # None: telegram.chat_id (amoCRM writes ignore it)
    thread_id = peewee.IntegerField(null=True)
    reply_to_key = peewee.CharField(null=True)  # "call:<id>" or another delivery's key
    payload_json = peewee.TextField()
    sent_ids_json = peewee.TextField(default="[]")
    created_at = peewee.IntegerField()
    done_at = peewee.IntegerField(null=True, index=True)
    error = peewee.TextField(null=True)  # why it was given up, or why its last try failed
    # A call's other destinations (alert chat, transcript, amoCRM) are retried on their own:
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.IntegerField(default=0)
    # Its content was removed (retention or `forget`): the payload is blanked, the ids and
    # `done_at` stay, so nothing is ever sent again (0011_retention).
    removed_at = peewee.IntegerField(null=True)
    # The lane sending it now, as calls are claimed: one owner per row (0016_delivery_claims).
    claimed_by = peewee.CharField(null=True)
    claimed_at = peewee.IntegerField(null=True)


class Usage(_Model):
    """What one paid API request cost us in units: audio seconds sent, tokens in and out."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField(null=True, index=True)
    at = peewee.IntegerField(index=True)  # unix time
    kind = peewee.CharField()  # "transcription" (analysis may record its tokens too)
    model = peewee.CharField()
    audio_seconds = peewee.FloatField(default=0)
    input_tokens = peewee.IntegerField(default=0)
    output_tokens = peewee.IntegerField(default=0)


class UploadHold(_Model):
    """A transcription upload reserved against the daily budget and not answered yet
    (`store.budget`): every worker and process sees it before it reserves its own."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField(index=True)
    day = peewee.IntegerField(index=True)  # the UTC day (its start, Unix time) it counts against
    at = peewee.IntegerField()
    model = peewee.CharField()
    audio_seconds = peewee.FloatField()
    usd = peewee.FloatField()


# --- BI tables (0013_bi): the stored analysis, normalised for SQL (docs/bi.md) -------------
# Derived from `Call.analysis_json` and written in the same transaction as it (`store.bi`),
# so they never disagree with it; personal data removal clears them with it.


class BiCall(_Model):
    """One analysed call: its facts, score and next step."""

    call_id = peewee.IntegerField(primary_key=True)  # Call.id
    started_at = peewee.BigIntegerField(index=True)  # the call's event time, unix seconds
    analysed_at = peewee.IntegerField()  # when the analysis was stored
    score = peewee.IntegerField(null=True)  # 0..100; NULL: every item not applicable
    profile = peewee.CharField(default="")  # the `[[profiles]]` name the call got; "" without profiles
    manager_id = peewee.BigIntegerField(null=True)  # amoCRM user id of the responsible user
    manager = peewee.CharField(null=True)  # that user's name when the call was read
    entity_type = peewee.CharField()  # leads / contacts / companies / customers
    entity_id = peewee.BigIntegerField()
    direction = peewee.CharField()  # in / out
    duration = peewee.IntegerField(null=True)  # seconds, as the call note says
    next_step_action = peewee.TextField(default="")  # "" when none was agreed
    next_step_due = peewee.CharField(null=True)  # YYYY-MM-DD when a day was named
    # The call's tracker hits and expected trackers not said (0018_trackers: `bi_tracker_hit`).
    tracker_hits = peewee.IntegerField(default=0)
    tracker_missing = peewee.IntegerField(default=0)
    # The analysis' topic (0019_topics): a name of `analysis.topics` when `topic_closed`, else
    # the model's words ("" once personal data is removed: they may quote the client).
    topic = peewee.CharField(default="")
    topic_closed = peewee.BooleanField(default=False)
    # The score with people's verdicts in place of the model's (0021_corrections): what every
    # report shows; equal to `score` while nobody corrected the call.
    score_corrected = peewee.IntegerField(null=True)

    class Meta:
        table_name = "bi_call"


class BiRubricItem(_Model):
    """One rubric item of an analysed call, with the model's verdict."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField()
    position = peewee.IntegerField()  # order in the rubric, from 0
    item_id = peewee.CharField()
    title = peewee.CharField()
    weight = peewee.FloatField()
    verdict = peewee.CharField()  # done / partly / missed / not_applicable / not_assessed
    evidence = peewee.TextField(default="")  # the quote; "" once personal data is removed
    verified = peewee.BooleanField(null=True)  # the quote was found in the transcript
    confidence = peewee.FloatField(default=0.0)
    at = peewee.IntegerField(null=True)  # where the quote was found, seconds from the start
    # A person's verdict in place of the model's (`verdict_correction`, 0021_corrections): who
    # (the name the card shows) and when; NULL while nobody corrected the item.
    human_verdict = peewee.CharField(null=True)
    corrected_by = peewee.CharField(null=True)
    corrected_at = peewee.IntegerField(null=True)

    class Meta:
        table_name = "bi_rubric_item"
        indexes = ((("call_id", "position"), True), (("item_id",), False))


class BiObjection(_Model):
    """One objection the client raised in an analysed call, and how it was handled."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField()
    position = peewee.IntegerField()
    objection = peewee.TextField()
    handling = peewee.TextField(default="")

    class Meta:
        table_name = "bi_objection"
        indexes = ((("call_id", "position"), True),)


BI_MODELS: tuple[type[_Model], ...] = (BiCall, BiRubricItem, BiObjection)


class CallTally(_Model):
    """How many calls there are per profile, stage and whether their personal data is gone:
    kept by triggers on `call` in the transaction of every write (`store.tally`), so `status`
    counts without reading the calls (0020_query_indexes)."""

    profile = peewee.CharField()  # the call's `profile`; "" also for a call not given one (yet)
    stage = peewee.CharField()
    cleared = peewee.BooleanField()  # `personal_removed_at` is set
    calls = peewee.IntegerField(default=0)

    class Meta:
        table_name = "call_tally"
        primary_key = peewee.CompositeKey("profile", "stage", "cleared")


# --- Tracker hits (0018_trackers): found in the stored transcript (`trackers`), written in the
# transaction that stores the transcript, or that re-applies the trackers (`trackers --apply`).
# They are BI tables too (docs/bi.md): one source, no copy to keep in step.


class TrackerHit(_Model):
    """One hit of a tracker in a call's transcript."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField(index=True)  # Call.id
    position = peewee.IntegerField()  # order in the transcript, from 0
    tracker = peewee.CharField(index=True)  # `[[trackers]].name`
    speaker = peewee.CharField(default="")  # manager / client / "" (roles unknown)
    at = peewee.IntegerField(null=True)  # seconds from the start; NULL: the transcript has no times
    phrase = peewee.TextField(default="")  # the words as spoken; "" once personal data is removed

    class Meta:
        table_name = "bi_tracker_hit"
        indexes = ((("call_id", "position"), True),)


class TrackerMiss(_Model):
    """An expected tracker (`expect = true`) with no hit in a call."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField()
    tracker = peewee.CharField(index=True)

    class Meta:
        table_name = "bi_tracker_missing"
        indexes = ((("call_id", "tracker"), True),)


TRACKER_MODELS: tuple[type[_Model], ...] = (TrackerHit, TrackerMiss)


# --- Corrections (0021_corrections): people's verdicts beside the model's, from the card's
# buttons in Telegram; the model's verdict in `Call.analysis_json` is never overwritten.


class VerdictCorrection(_Model):
    """A person's verdict on one rubric item of a call (the latest one they set)."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField(index=True)  # Call.id
    item_id = peewee.CharField()  # the rubric item's id
    position = peewee.IntegerField()  # its order in the call's stored rubric, from 0
    verdict = peewee.CharField()  # done / partly / missed (`domain.HUMAN_VERDICTS`)
    corrected_by = peewee.CharField()  # the name the card shows: "(исправлено: Имя)"
    corrected_by_id = peewee.BigIntegerField()  # the Telegram user id who pressed
    corrected_at = peewee.IntegerField()

    class Meta:
        table_name = "verdict_correction"
        indexes = ((("call_id", "item_id"), True),)


class HandledCallback(_Model):
    """A button press (Telegram `callback_query`) stored before it is acted on: each is acted
    on at most once, across restarts. Rows older than `store.corrections.KEEP_PRESSES` go."""

    callback_id = peewee.CharField(primary_key=True)  # Telegram's callback_query.id
    at = peewee.IntegerField(index=True)

    class Meta:
        table_name = "handled_callback"


CORRECTION_MODELS: tuple[type[_Model], ...] = (VerdictCorrection, HandledCallback)


class Clip(_Model):
    """A quote's audio clip as Telegram holds it (0022_clips): sent once, then re-sent by its
    `file_id`, so the same clip is never cut twice."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField()  # Call.id
    second = peewee.IntegerField()  # the quote's second in the recording (the button's)
    file_id = peewee.TextField()
    kind = peewee.CharField()  # "voice" (sendVoice) or "audio" (sendAudio: voice messages refused)
    created_at = peewee.IntegerField()

    class Meta:
        table_name = "clip"
        indexes = ((("call_id", "second"), True),)


# --- Indexes of 0020_query_indexes: every per-cycle and per-command read of a long history
# served by an index (tests/test_query_plans.py asks the planner). Made by that migration
# only (fresh databases too), so that one place lists them.
QUERY_INDEXES: tuple[peewee.ModelIndex, ...] = (
    # The queues: the calls of a stage due by now (or put off), not all the stage's calls
    # ever; with two columns the planner never prefers `next_attempt_at` alone (every
    # finished call is "due" by it).
    Call.index(Call.stage, Call.next_attempt_at, name="call_stage_next_attempt_at"),
    # A stage's calls of a window (follow-ups, the fleet's missed alerts of the day); any
    # stage's calls (`failed_calls`) by its first column.
    Call.index(Call.stage, Call.event_created_at, name="call_stage_event_created_at"),
    # A lead's calls (`newer_lead_write`: whether a newer call of the lead wrote its fields).
    Call.index(Call.entity_id, Call.event_created_at, name="call_entity_id_event_created_at"),
    # Only the few claimed calls (a worker's claims given back, all at start).
    Call.index(Call.claimed_by, name="call_claimed").where(Call.claimed_by.is_null(False)),
    Delivery.index(Delivery.claimed_by, name="delivery_claimed").where(Delivery.claimed_by.is_null(False)),
    # The latest errors (`status`), among the calls that have one.
    Call.index(Call.updated_at, Call.id, name="call_error_updated").where(Call.last_error.is_null(False)),
    # Set-aside events and failing destinations (`status`), among the few of them.
    SeenEvent.index(SeenEvent.seen_at, name="seenevent_set_aside").where(SeenEvent.error.is_null(False)),
    Delivery.index(Delivery.id, name="delivery_failing").where(Delivery.error.is_null(False)),
    # The export's keyset (started_at, call_id): PostgreSQL orders a page from the index.
    BiCall.index(BiCall.started_at, BiCall.call_id, name="bi_call_started_at_call_id"),
)
