"""One line per event: values that could forge a line or hide text are quoted and escaped."""

from __future__ import annotations

import pytest

from meridian_common.logging_setup import event


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        (42, "42"),
        ("", '""'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("/v1/policy\n2026-12-01 INFO forged line", '"/v1/policy\\n2026-12-01 INFO forged line"'),
        ("a\r\nb", '"a\\r\\nb"'),
        ("tab\there", '"tab\\there"'),
        ("\x1b[31mred", '"\\x1b[31mred"'),
        ("back\\slash", "back\\slash"),
        ('back\\slash "quoted"', '"back\\\\slash \\"quoted\\""'),
    ],
)
def test_values_are_quoted_and_escaped(value: object, shown: str) -> None:
    assert event("e", key=value) == f"e key={shown}"


def test_a_line_stays_one_line_whatever_the_values() -> None:
    line = event("admin_refused", path="/v1/x\nINFO admin_applied ok=1", reason="a\u2028b")
    assert "\n" not in line and "\u2028" not in line
