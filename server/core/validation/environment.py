"""Which environment a create request may give a flow: names of a plain shape, and none that
steers an interpreter, the loader, a shell or the flow runtime (issue 11: `PYTHONWARNINGS` +
`BROWSER` + `BASH_ENV` ran a shell command in flow:latest with no code placed anywhere)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from server.core.errors import InvalidRequest

__all__ = ["check_environment", "refused_by", "utf8_text", "REFUSED_ENV", "MAX_ENV_NAME"]

MAX_ENV_NAME = 255
"""Longest variable name accepted."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

REFUSED_ENV: tuple[tuple[str, str], ...] = (
    # (name, or prefix ending in "*"; why). Compared case-insensitively: Linux names are
    # case-sensitive, but some programs also read lower-case spellings, and no flow needs
    # `ld_preload` or `Path`. docs/FLOWS.md lists this table (a unit test keeps them equal).
    (
        "FLOW_*",
        "the flow runtime's own settings (socket, code dir, main script, frame size, "
        "log level): the manager and the image set them",
    ),
    (
        "PYTHON*",
        "Python: PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, PYTHONUSERBASE load code; "
        "PYTHONWARNINGS imports a module",
    ),
    (
        "LD_*",
        "the dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT load code into every process",
    ),
    (
        "PATH",
        "which program runs: the engine resolves the image's entry point with it, and "
        "update_container's `sh`",
    ),
    (
        "HOME",
        "Python's user site-packages (`.pth` files run code), shells' and tools' start-up files",
    ),
    ("SHELL", "the shell programs start for commands"),
    ("BASH_ENV", "every non-interactive bash expands it (command substitution) and sources it"),
    ("ENV", "sh and bash in POSIX mode source it"),
    ("BASH_FUNC_*", "exported bash functions, defined in every bash"),
    ("BASH_*", "bash's own settings (BASH_XTRACEFD, BASH_LOADABLES_PATH, BASH_COMPAT)"),
    ("SHELLOPTS", "bash options (xtrace with PS4 runs commands)"),
    ("BASHOPTS", "bash options"),
    ("PS0", "prompts are expanded (command substitution)"),
    ("PS1", "prompts are expanded (command substitution)"),
    ("PS2", "prompts are expanded (command substitution)"),
    ("PS4", "expanded by every traced command (command substitution)"),
    ("PROMPT_COMMAND", "bash runs it before each prompt"),
    ("IFS", "changes how every shell script splits words"),
    ("BROWSER", "a command: Python's webbrowser and others run it"),
    ("EDITOR", "a command other programs run"),
    ("VISUAL", "a command other programs run"),
    ("PAGER", "a command other programs run"),
    ("MANPAGER", "a command other programs run"),
    ("LESSOPEN", "less runs it on every file"),
    ("LESSCLOSE", "less runs it on every file"),
    ("PERL5OPT", "Perl: options and modules loaded at start"),
    ("PERL5LIB", "Perl: where modules load from"),
    ("PERLLIB", "Perl: where modules load from"),
    ("PERL5DB", "Perl: debugger code"),
    ("RUBYOPT", "Ruby: options and libraries loaded at start"),
    ("RUBYLIB", "Ruby: where libraries load from"),
    ("NODE_OPTIONS", "Node.js: options, `--require` loads code"),
    ("NODE_PATH", "Node.js: where modules load from"),
    ("JAVA_TOOL_OPTIONS", "Java: options, `-javaagent` loads code"),
    ("_JAVA_OPTIONS", "Java: options, `-javaagent` loads code"),
    ("JDK_JAVA_OPTIONS", "Java: options, `-javaagent` loads code"),
    ("CLASSPATH", "Java: where classes load from"),
    ("GCONV_PATH", "glibc loads iconv modules (shared objects) from it"),
    ("GLIBC_TUNABLES", "glibc internals (its parser had a root exploit, CVE-2023-4911)"),
    ("MALLOC_*", "glibc malloc checks and tunables"),
    ("HOSTALIASES", "the resolver reads host aliases from that file"),
    ("LOCPATH", "glibc loads locale data from it"),
    ("NLSPATH", "message catalogues load from it"),
    ("OPENSSL_CONF", "OpenSSL's configuration loads engines and providers (shared objects)"),
    ("OPENSSL_ENGINES", "OpenSSL loads engines (shared objects) from it"),
    ("OPENSSL_MODULES", "OpenSSL loads providers (shared objects) from it"),
    ("GIT_*", "git runs programs named there (GIT_SSH, GIT_EXEC_PATH, GIT_CONFIG_*)"),
)

_EXACT = {p for p, _ in REFUSED_ENV if not p.endswith("*")}
_PREFIXES = tuple(p[:-1] for p, _ in REFUSED_ENV if p.endswith("*"))


def refused_by(key: str) -> str | None:
    """The REFUSED_ENV entry that refuses `key` (case-insensitively), or None."""
    upper = key.upper()
    if upper in _EXACT:
        return upper
    for prefix in _PREFIXES:
        if upper.startswith(prefix):
            return prefix + "*"
    return None


def check_environment(environment: object) -> None:
    """Raise InvalidRequest(field="environment") unless every key has the shape
    `[A-Za-z_][A-Za-z0-9_]*` (at most MAX_ENV_NAME) and is not in REFUSED_ENV, and every value
    is a string without NUL or lone surrogates. `details.variable` names the key (a detail
    called "key" would be masked on the wire: a secret-like name); a value is never echoed."""
    if not isinstance(environment, Mapping):
        raise InvalidRequest("environment must be an object of strings", field="environment")
    for key, value in environment.items():
        if not isinstance(key, str) or len(key) > MAX_ENV_NAME or not _NAME.fullmatch(key):
            shown = _printable(str(key))
            raise InvalidRequest(
                f"environment key '{shown}' is not a variable name: letters, "
                f"digits and '_', not starting with a digit, at most "
                f"{MAX_ENV_NAME} characters",
                field="environment",
                details={"variable": shown},
            )
        rule = refused_by(key)
        if rule is not None:
            raise InvalidRequest(
                f"environment key {key} is refused: {rule} steers an "
                "interpreter, the loader, a shell or the flow runtime "
                "(see docs/FLOWS.md)",
                field="environment",
                details={"variable": key, "rule": rule},
            )
        if not isinstance(value, str) or "\0" in value or not utf8_text(value):
            raise InvalidRequest(
                f"environment value of {key} must be a string without NUL or lone surrogates",
                field="environment",
                details={"variable": key},
            )


def _printable(key: str) -> str:
    """At most 80 characters, anything not printable ASCII escaped (safe to echo as JSON)."""
    return ascii(key[:80])[1:-1]


def utf8_text(text: str) -> bool:
    """False for text holding a lone surrogate: JSON can carry "\\ud800", but the engine would
    receive U+FFFD instead, so the value checked would not be the value used."""
    return text.isascii() or not any("\ud800" <= c <= "\udfff" for c in text)
