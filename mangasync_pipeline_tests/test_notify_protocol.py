"""The wire format: signatures as PROTOCOL.md defines them, and the 1200-byte cut."""

from __future__ import annotations

import hashlib
import hmac
import json

from mangasync_pipeline.notify import protocol


def test_signature_is_hmac_sha256_of_the_documented_string() -> None:
    expected = hmac.new(b"tok", b"REGISTER|alice|1700000000|abcdefgh|acookie",
                        hashlib.sha256).hexdigest()
    assert protocol.sign_register("tok", "alice", 1700000000, "abcdefgh", "acookie") == expected
    assert protocol.signature_matches("tok", "alice", 1700000000, "abcdefgh", expected,
                                      "acookie")
    # The cookie is signed: the same REGISTER with another address's cookie does not match.
    assert not protocol.signature_matches("tok", "alice", 1700000000, "abcdefgh", expected,
                                          "bcookie")
    expected = protocol.sign_register("tok", "alice", 1700000000, "abcdefgh")
    assert not protocol.signature_matches("tok", "alice", 1700000000, "abcdefgh", expected[:-1])
    assert not protocol.signature_matches("tok", "alice", 1700000000, "abcdefgh", "é" * 64)


def test_long_multibyte_text_is_cut_on_a_character_with_an_ellipsis() -> None:
    msg = {"type": "MANGA_UPDATE", "id": 1, "manga_id": 2, "title": "進撃の巨人" * 100,
           "message": "状態: 完結 " * 300, "created_at": "2026-01-01T00:00:00Z"}
    data = protocol.encode(msg)
    assert len(data) <= 1200
    decoded = json.loads(data.decode("utf-8"))
    assert decoded["message"] == "…"  # the message goes first, then the title
    assert decoded["title"].endswith("…")
    assert decoded["title"][:-1] in msg["title"]
    assert len(data) > 1150  # cut as little as needed


def test_short_messages_are_untouched_and_garbage_decodes_to_none() -> None:
    msg = {"type": "PONG"}
    assert protocol.decode(protocol.encode(msg)) == msg
    for junk in (b"", b"\xff", b"[1]", b'{"type": 3}', b"{" * 2000, b'{"a":1}'):
        assert protocol.decode(junk) is None


def test_listen_lines_show_the_chapter_label_and_the_title_once() -> None:
    from mangasync_pipeline.notify.client import format_notification

    chapter = {"type": "NEW_CHAPTER", "id": 7, "manga_id": 1, "title": "Little Tower",
               "chapter": "12", "label": "12a", "message": "Chapter 12a: Side story",
               "created_at": "2026-01-01T00:00:00Z"}
    line = format_notification(chapter)
    assert "ch. 12a" in line and line.count("Little Tower") == 1
    assert "ch. 12 " in format_notification({**chapter, "label": None}) + " "
    manga = {"type": "NEW_MANGA", "id": 3, "manga_id": 1, "title": "Little Tower",
             "message": "New manga: Little Tower", "created_at": "2026-01-01T00:00:00Z"}
    assert format_notification(manga).count("Little Tower") == 1


def test_a_broadcast_template_encodes_like_encode_for_every_id() -> None:
    msg = {"type": "NEW_CHAPTER", "id": 0, "manga_id": 2, "title": "進撃" * 400,
           "chapter": "3", "label": None, "message": "x" * 900,
           "created_at": "2026-01-01T00:00:00Z"}
    head, tail = protocol.notification_template(msg)
    for nid in (1, 42, 2**63 - 1):
        data = head + str(nid).encode() + tail
        assert len(data) <= 1200
        assert json.loads(data)["id"] == nid
        assert json.loads(data)["title"].endswith("…")  # cut once, for the widest id
    short = {**msg, "title": "T", "message": "m"}
    head, tail = protocol.notification_template(short)
    assert head + b"7" + tail == protocol.encode({**short, "id": 7})
