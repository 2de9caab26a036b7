"""Log lines never carry a secret: the redaction decided once per key (issue 17: the hot path's
log lines) must still redact on every line, the first and the later ones alike."""

from __future__ import annotations

from orchgpt import logs


def test_secret_keys_are_redacted_on_every_line_and_others_kept() -> None:
    for _ in range(3):  # the first line decides each key; the later ones use the decision
        d = logs._redact(None, "info", {"api_key": "K", "Password": "P", "db_key_pem": "x", "user": "u", "tokens": 3})
        assert d == {
            "api_key": "[redacted]",
            "Password": "[redacted]",
            "db_key_pem": "[redacted]",
            "user": "u",
            "tokens": 3,
        }


def test_a_key_that_is_not_a_string_is_checked_too() -> None:
    class Key:
        def __str__(self) -> str:
            return "Authorization"

    k = Key()
    assert logs._redact(None, "info", {k: "Bearer x"}) == {k: "[redacted]"}
