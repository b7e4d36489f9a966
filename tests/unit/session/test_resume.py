"""Resume tokens name one participant incarnation and nothing else."""

from __future__ import annotations

from sfu.session.resume import ResumeTokens


def test_a_resume_token_names_its_incarnation_only_for_its_cid_sid_and_uid() -> None:
    tokens = ResumeTokens(b"k" * 32)
    token = tokens.issue("c", "s", "u", "inc-1")
    assert tokens.incarnation(token, "c", "s", "u") == "inc-1"
    assert tokens.incarnation(token, "c", "s", "other") is None
    assert tokens.incarnation(token, "c2", "s", "u") is None


def test_a_tampered_or_foreign_resume_token_matches_nothing() -> None:
    tokens = ResumeTokens(b"k" * 32)
    token = tokens.issue("c", "s", "u", "inc-1")
    assert ResumeTokens(b"j" * 32).incarnation(token, "c", "s", "u") is None
    assert tokens.incarnation(token[:-2] + "00", "c", "s", "u") is None
    for garbage in ("", ".", "x.y", "!!!.zz", token.split(".")[0]):
        assert tokens.incarnation(garbage, "c", "s", "u") is None
