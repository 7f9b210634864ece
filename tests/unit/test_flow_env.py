"""Environment keys: a plain shape, and none that steers an interpreter, the loader, a shell or
the flow runtime; each refusal names the variable and never quotes the value (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings, load_settings
from server.core.errors import InvalidRequest
from server.core.models import CreateSpec
from server.core.validation import check_shapes
from server.core.validation.environment import (
    MAX_ENV_NAME,
    REFUSED_ENV,
    check_environment,
    refused_by,
)
from server.core.validation.host import validate_create

ROOT = Path(__file__).resolve().parents[2]
VALUE = "s3cret-value-$(id)"


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return load_settings(env={}, socket_dir=str(tmp_path / "sockets"))


def _spellings(rule: str) -> list[str]:
    """Names a rule must refuse: the name (or the family with two tails), lower and mixed case."""
    names = [rule[:-1] + "X", rule[:-1] + "A_B"] if rule.endswith("*") else [rule]
    return [s for n in names for s in (n, n.lower(), n[:1].lower() + n[1:])]


def _refuses(environment: dict[Any, Any], cfg: Settings) -> InvalidRequest:
    spec = CreateSpec(name="flow-1", image="flow:latest", environment=environment)
    with pytest.raises(InvalidRequest) as info:
        validate_create(spec, cfg, env={})
    err = info.value
    assert err.error_type == "validation_error" and err.details["field"] == "environment"
    assert VALUE not in err.message and VALUE not in repr(err.details)
    with pytest.raises(InvalidRequest) as again:  # the panels' check (the shapes) agrees
        check_shapes(spec)
    assert again.value.details == err.details
    return err


@pytest.mark.parametrize("name", [n for rule, _ in REFUSED_ENV for n in _spellings(rule)])
def test_every_refused_name_is_refused(name: str, cfg: Settings) -> None:
    err = _refuses({"LOG_LEVEL": "debug", name: VALUE}, cfg)
    assert err.details["variable"] == name
    assert err.details["rule"] == refused_by(name)
    assert name in err.message


# The names the issue and its review named, each on its own (some are covered by a family).
NAMED = [
    "FLOW_SOCKET",
    "FLOW_MAIN",
    "FLOW_CODE_DIR",
    "FLOW_MAX_FRAME_BYTES",
    "FLOW_LOG_LEVEL",
    "PYTHONPATH",
    "PYTHONWARNINGS",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONINSPECT",
    "PYTHON_GIL",
    "PYTHONSAFEPATH",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_ls",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "IFS",
    "BROWSER",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "MALLOC_CHECK_",
    "MALLOC_ARENA_MAX",
    "HOSTALIASES",
    "LOCPATH",
    "NLSPATH",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_EXEC_PATH",
    "GIT_CONFIG_COUNT",
    "PATH",
    "HOME",
    "SHELL",
    "OPENSSL_CONF",
]


@pytest.mark.parametrize("name", NAMED)
def test_named_keys_refused(name: str, cfg: Settings) -> None:
    assert _refuses({name: VALUE}, cfg).details["variable"] == name


def test_the_runtimes_own_variables_are_refused(cfg: Settings) -> None:
    # Whatever FLOW_* the runtime reads now or later: read it from its sources.
    text = (ROOT / "flow" / "flowrt.py").read_text() + (ROOT / "flow" / "entrypoint.py").read_text()
    names = set(re.findall(r"\bFLOW_[A-Z_]+\b", text))
    assert {"FLOW_SOCKET", "FLOW_MAIN", "FLOW_CODE_DIR"} <= names
    for name in names:
        assert _refuses({name: VALUE}, cfg).details["rule"] == "FLOW_*"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "1A",
        "A-B",
        "A.B",
        "A B",
        "A=B",
        "A\0",
        "A\n",
        "é",
        "K\ud800",
        "BASH_FUNC_ls%%",
        "a" * (MAX_ENV_NAME + 1),
        " A",
    ],
)
def test_names_of_another_shape_refused(name: str, cfg: Settings) -> None:
    err = _refuses({name: VALUE}, cfg)
    assert err.details["variable"] == ascii(name[:80])[1:-1]  # escaped: safe to echo


@pytest.mark.parametrize("value", [1, None, ["x"], "x\0y", "x\udfff"])
def test_bad_values_refused_without_echo(value: Any, cfg: Settings) -> None:
    err = _refuses({"DB_PASSWORD": value}, cfg)
    assert err.details == {"field": "environment", "variable": "DB_PASSWORD"}


@pytest.mark.parametrize(
    "name",
    [
        "LOG_LEVEL",
        "DB_PASSWORD",
        "LANG",
        "LC_ALL",
        "TZ",
        "HTTP_PROXY",
        "no_proxy",
        "_X",
        "x1",
        "a" * MAX_ENV_NAME,
        "PATHS",
        "MY_PATH",
        "HOMEPAGE",
        "FLOWER",
        "FLOW",
        "ENVIRONMENT",
        "LDFLAGS",
        "PYTHO",
        "GITHUB_REF",
        "NODE_ENV",
        "MALLOC",
    ],
)
def test_ordinary_names_accepted(name: str, cfg: Settings) -> None:
    spec = CreateSpec(name="flow-1", image="flow:latest", environment={name: VALUE})
    assert validate_create(spec, cfg, env={}).environment == {name: VALUE}
    check_shapes(spec)


def test_not_a_mapping_refused() -> None:
    for environment in (None, [("A", "b")], "A=b"):
        with pytest.raises(InvalidRequest) as info:
            check_environment(environment)
        assert info.value.details["field"] == "environment"


def test_docs_list_the_same_table() -> None:
    text = (ROOT / "docs" / "FLOWS.md").read_text()
    table = text.split("<!-- refused-env")[1].split("<!-- /refused-env -->")[0]
    rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", table, re.MULTILINE)
    assert rows == [(p, why) for p, why in REFUSED_ENV]
    security = (ROOT / "docs" / "SECURITY.md").read_text()
    for rule, _ in REFUSED_ENV:
        assert f"`{rule}`" in security, rule
