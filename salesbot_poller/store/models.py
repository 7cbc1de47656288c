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
    stage = peewee.CharField(index=True, default=Stage.NEW.value)
    kind = peewee.CharField(null=True)  # conversation / missed, once the note is read
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.IntegerField(default=0, index=True)
    last_error = peewee.TextField(null=True)
    skip_reason = peewee.TextField(null=True)
    # From the note, and names resolved when it was read.
    duration = peewee.IntegerField(null=True)
    phone = peewee.CharField(null=True)
    link = peewee.TextField(null=True)
    call_status = peewee.IntegerField(null=True)
    source = peewee.CharField(null=True)
    responsible_user_id = peewee.BigIntegerField(null=True)
    manager_name = peewee.CharField(null=True)
    entity_name = peewee.CharField(null=True)
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
