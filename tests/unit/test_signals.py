"""The kill signal allow-list (server/core/validation/signals.py): one spelling out."""

from __future__ import annotations

import pytest

from server.core.errors import InvalidRequest
from server.core.validation.signals import KILL_SIGNALS, check_signal


@pytest.mark.parametrize(
    ("given", "sent"),
    [("term", "SIGTERM"), ("TERM", "SIGTERM"), ("SigTerm", "SIGTERM"), ("SIGKILL", "SIGKILL"),
     ("usr2", "SIGUSR2"), ("sighup", "SIGHUP")],
)  # fmt: skip
def test_names_with_or_without_sig_in_any_case(given: str, sent: str) -> None:
    assert check_signal(given) == sent


def test_every_allowed_name_is_its_own_spelling() -> None:
    assert all(check_signal(name) == name for name in KILL_SIGNALS)


@pytest.mark.parametrize("bad", ["SIGSIGKILL", "KILL ", "sig", "STOP", "\u212akill", 15, None])
def test_near_misses_are_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_signal(bad)
    assert err.value.details == {"field": "signal", "allowed": list(KILL_SIGNALS)}
