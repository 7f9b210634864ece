"""The one masking helper: secret names, URL credentials, nesting, hostile text."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.container_info import info_from_inspect
from server.core.masking import (
    MASK,
    is_secret_name,
    mask_env,
    mask_log_line,
    mask_text,
    mask_value,
    secret_env_values,
)

SECRET = "hunter2XYZ"


@pytest.mark.parametrize(
    "name",
    [
        "DB_PASSWORD",
        "password",
        "PASSWD",
        "api_key",
        "GITHUB_TOKEN",
        "client_secret",
        "AWS_SECRET_ACCESS_KEY",
        "X-Auth-Token",
        "credentials",
        "SSH_PASSPHRASE",
        "session_cookie",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "LOG_LEVEL", "image", "container_id", "port"])
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


def test_env_values_with_secret_names_masked() -> None:
    env = {
        "DB_PASSWORD": SECRET,
        "API_KEY": SECRET,
        "PATH": "/bin",
        "EMPTY_TOKEN": "",
        "DSN": f"postgres://app:{SECRET}@db:5432/x",
    }
    out = mask_env(env)
    assert out["DB_PASSWORD"] == out["API_KEY"] == MASK
    assert out["PATH"] == "/bin"
    assert out["DSN"] == "postgres://app:***@db:5432/x"
    assert SECRET not in repr(out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"postgres://app:{SECRET}@db:5432/x", "postgres://app:***@db:5432/x"),
        (f"redis://:{SECRET}@cache", "redis://:***@cache"),
        (f"mongodb+srv://admin:{SECRET}@cluster0/db", "mongodb+srv://admin:***@cluster0/db"),
        (f"https://{SECRET}@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
        (f"amqp://u:p/{SECRET}@ss@rabbit/vh", "amqp://u:***@rabbit/vh"),
        (f"connect to http://u:{SECRET}@h:1 now", "connect to http://u:***@h:1 now"),
        ("see https://example.com/a/b?c=d", "see https://example.com/a/b?c=d"),
        ("mail http://example.com/contact@us", "mail http://example.com/contact@us"),
    ],
)
def test_url_credentials_masked(text: str, expected: str) -> None:
    assert mask_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        f"DB_PASSWORD={SECRET}",
        f"PASSWORD={SECRET}",
        f"export GITHUB_TOKEN={SECRET}; next",
        f"docker run --env=DB_PASSWORD={SECRET} img",
        f'API_KEY="{SECRET} with spaces"',
        f"API_KEY='{SECRET} with spaces'",
        f"GET /x?user=bob&token={SECRET}&page=2",
        f'{{"password": "{SECRET}", "user": "bob"}}',
        f"{{'client_secret': '{SECRET}'}}",
        f'{{"pin_key": {SECRET}}}',
        f"password: {SECRET}",
        f"X-Api-Key: {SECRET}",
        f"Authorization: Basic {SECRET}",
        f"curl -H 'Authorization: Bearer {SECRET}'",
        f"SECRET_KEY={SECRET}\nnext line",
        f"input_value={{'DB_PASSWORD': '{SECRET}'}}",
    ],
)
def test_secret_assignments_in_text_masked(text: str) -> None:
    out = mask_text(text)
    assert SECRET not in out
    assert MASK in out


def test_plain_text_untouched() -> None:
    text = "container web-1 exited with code 137; image=flow:latest port: 8080 user=bob"
    assert mask_text(text) == text


def test_nested_dicts_and_lists_masked() -> None:
    value: dict[str, Any] = {
        "operation": "create_container",
        "environment": {"DB_PASSWORD": SECRET, "MODE": "prod", "EMPTY_SECRET": ""},
        "volumes": {"/data": "/data"},
        "args": [f"--token={SECRET}", {"api_key": SECRET}],
        "credentials": {"user": "bob", "pass": SECRET, "list": [SECRET, 3]},
        "tokens": [SECRET, SECRET],
        "url": f"https://u:{SECRET}@h/x",
        "count": 3,
    }
    out = mask_value(value)
    assert SECRET not in repr(out)
    assert out["environment"] == {"DB_PASSWORD": MASK, "MODE": "prod", "EMPTY_SECRET": ""}
    assert out["credentials"] == {"user": MASK, "pass": MASK, "list": [MASK, MASK]}
    assert out["tokens"] == [MASK, MASK]
    assert out["count"] == 3 and out["volumes"] == {"/data": "/data"}
    assert value["environment"]["DB_PASSWORD"] == SECRET  # the input is left alone


def test_masking_is_idempotent() -> None:
    value = {"env": {"API_TOKEN": SECRET}, "msg": f"postgres://a:{SECRET}@h PASSWORD={SECRET}"}
    once = mask_value(value)
    assert mask_value(once) == once


def test_deep_nesting_summarised_not_crashing() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    node["password"] = SECRET
    assert SECRET not in repr(mask_value(deep))


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    [
        "a" * 1_000_000,
        "PASSWORD" * 125_000,
        "a://a:" * 100_000,
        'PASSWORD="' * 100_000,
        "a=a" * 300_000,
        '"password": "' * 50_000,
        "token:" * 100_000,
        "Authorization: " * 60_000,
        "x://" + "@" * 500_000,
        os.urandom(1_000_000).decode("latin-1"),
    ],
)
def test_hostile_text_is_masked_in_linear_time(text: str) -> None:
    """A hang guard: quadratic patterns would take minutes on these 1 MB inputs."""
    assert isinstance(mask_text(text), str)


_SECRETS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=24)
_NAMES = st.sampled_from(["DB_PASSWORD", "api_key", "GITHUB_TOKEN", "client_secret", "AUTH"])
_TEMPLATES = st.sampled_from(
    [
        "{n}={s}",
        '{n}="{s}"',
        '{{"{n}": "{s}"}}',
        "{n}: {s}",
        "x {n}={s}&y=1",
        "https://user:{s}@host/p",
        "ftp://{s}@host",
        "--{n}={s} --other",
    ]
)


@given(
    name=_NAMES,
    secret=_SECRETS,
    template=_TEMPLATES,
    prefix=st.text(alphabet=" .,;:=&\"'/{}[]@ABC", max_size=20),
)
def test_generated_secrets_never_survive(
    name: str, secret: str, template: str, prefix: str
) -> None:
    text = prefix + " " + template.format(n=name, s=secret)
    assert secret not in mask_text(text)
    assert secret not in repr(mask_value({name: secret, "note": text}))


# A container's own output: its secret env values are masked wherever they appear.

_ENV = [
    "PATH=/usr/bin",
    f"DB_PASSWORD={SECRET}",
    "API_TOKEN=abc",
    "MODE=production",
    "EMPTY_SECRET=",
    "NOEQUALS_KEY",
]


def test_secret_env_values_keeps_long_secret_named_values_only() -> None:
    assert secret_env_values(_ENV) == (SECRET,)  # "abc" is too short, MODE is not secret


def test_a_literal_secret_value_is_masked_without_its_name() -> None:
    values = secret_env_values(_ENV)
    assert mask_log_line(f"connecting with {SECRET} now", values) == "connecting with *** now"
    assert mask_log_line(f"{SECRET}{SECRET}", values) == MASK * 2
    assert mask_log_line(f"DB_PASSWORD={SECRET}", values) == "DB_PASSWORD=***"


def test_short_values_are_not_masked_as_literals() -> None:
    values = secret_env_values(["API_TOKEN=abc", "DB_PASSWORD=x"])
    assert values == ()
    assert mask_log_line("abc x abc", values) == "abc x abc"


def test_overlapping_values_leave_neither_secret() -> None:
    """Longest first: a value holding another is masked whole, not around the shorter one."""
    values = secret_env_values(
        [
            "A_TOKEN=hunter2",
            "B_PASSWORD=xhunter2x",
            "C_KEY=2xyzw",
            "D_SECRET=abcdef",
            "E_SECRET=defghi",
        ]
    )
    assert values[0] == "xhunter2x"
    for line in ["xhunter2x", "hunter2xyzw", "abcdefghi", "defghiabcdef", "a hunter2 b"]:
        out = mask_log_line(line, values)
        assert [v for v in values if v in out] == [], (line, out)
        assert MASK in out
    assert mask_log_line("xhunter2x", values) == MASK


def test_regex_metacharacters_in_a_value_are_literal() -> None:
    value = r"p@ss.(w*rd)+[x]|^$\1"
    values = secret_env_values([f"DB_PASSWORD={value}"])
    assert mask_log_line(f"pw is {value}.", values) == "pw is ***."
    assert mask_log_line("pass word", values) == "pass word"  # no pattern matching


def test_log_line_without_secrets_is_unchanged() -> None:
    line = "2024-01-01 INFO worker processed item 7 in 3.2 ms"
    assert mask_log_line(line, secret_env_values(_ENV)) is line
    assert mask_log_line(f"https://u:{SECRET}@h/x", ()) == "https://u:***@h/x"


def test_inspect_keeps_secret_values_out_of_repr() -> None:
    info = info_from_inspect({"Id": "c1", "Name": "/c1", "Config": {"Env": _ENV}, "State": {}})
    assert info.secret_values == (SECRET,)
    assert SECRET not in repr(info)
