"""A seeded generator of malformed Socket.IO requests, shared by the API test and the bench.

Every request event of docs/PROTOCOL.md (and its ext ones) gets every shape that applies: non-object
payloads, missing fields, wrong types, empty and over-long strings, huge strings, unknown
containers, bad environment/ports/volumes/images/names, unicode junk (lone surrogates, NUL,
controls, superscript digits) and deep nesting. Each request is built to be refused, and says
which error type it must get: a server that answers anything else, or accepts it, is wrong.
The server under test must manage no containers, so every well-formed id is unknown.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ERROR_TYPES", "EVENTS", "Malformed", "generate"]

ERROR_TYPES = frozenset(
    {
        "image_not_found",
        "container_not_found",
        "docker_api_error",
        "socket_error",
        "socket_timeout_error",
        "socket_connection_error",
        "validation_error",
        "system_error",
    }
)
BY_ID = (
    "start_container",
    "stop_container",
    "restart_container",
    "delete_container",
    "get_container_status",
    "subscribe_logs",
    "unsubscribe_logs",
    "inspect_container",
    # ext (issue 17): only a container_id (kill's signal defaults); their signal's hostile
    # values are tests/integration/test_api_pause_kill.py's
    "pause_container",
    "unpause_container",
    "kill_container",
)
EVENTS = (
    *BY_ID,
    "create_container",
    "update_container",
    "send_message",
    "list_containers",
    "get_container_logs",
)
NOT_FOUND, INVALID = "container_not_found", "validation_error"
UNDECODABLE = "<undecodable request>"
"""The operation the server names for a request whose JSON it cannot decode."""

# Strings a careless server trips over: encoders, regexes, path functions, int().
JUNK_TEXT = [
    "\ud800",
    "\udfff",
    "a\x00b",
    "\x00",
    "\u202e\u200b\ufeff",
    "²³",
    "٨٠",
    "𝟠𝟘",
    "\r\n\t\x1b[31m",
    "😀" * 3,
    "../../..",
    "%s%n%x",
    "{{7*7}}",
    "\\",
    "'\"",
    " ",
    "NaN",
    "null",
    "true",
    "ＡＢＣ",
    "ǅ",
    "\u0301",
    "ﷺ",
]
# The junk no name or environment key may hold (so a create built of it is always refused).
NOT_NAME_TEXT = [t for t in JUNK_TEXT if not re.fullmatch(r"[A-Za-z0-9_.-]*", t)]
# Lone surrogates are JSON but not UTF-8: a string field holding one is refused as invalid, so
# an id meant to be merely unknown is built without them.
SURROGATES = ("\ud800", "\udfff")
UTF8_TEXT = [t for t in JUNK_TEXT if t not in SURROGATES]


@dataclass(frozen=True)
class Malformed:
    """One request to emit: `payload` is what is sent (maybe not an object)."""

    event: str
    payload: Any
    shape: str
    expect: str
    """The error type the server must answer with."""
    operation: str | None = None
    """`details.operation` of that error, when it is not the event's name."""


def generate(count: int, *, seed: int, code_dir: str) -> list[Malformed]:
    """`count` malformed requests, the same list for the same seed. `code_dir` is an existing,
    unprotected directory on the server's host (a valid `code_path` for unknown-id updates)."""
    rng = random.Random(seed)
    gen = _Gen(rng, code_dir)
    shapes = gen.shapes()
    out = []
    for i in range(count):
        name, make = shapes[i % len(shapes)] if i < len(shapes) else rng.choice(shapes)
        event, payload, expect = make()
        # (an undecodable request is answered, but nothing of it can be echoed)
        if (
            isinstance(payload, dict)
            and rng.random() < 0.5
            and "request_id" not in payload
            and name != "undecodable"
        ):
            payload = {**payload, "request_id": f"m{i}"}
        out.append(
            Malformed(event, payload, name, expect, UNDECODABLE if name == "undecodable" else None)
        )
    return out


class _Gen:
    def __init__(self, rng: random.Random, code_dir: str) -> None:
        self.r = rng
        self.code_dir = code_dir

    def shapes(self) -> list[tuple[str, Callable[[], tuple[str, Any, str]]]]:
        """(shape name, maker) pairs; each maker returns (event, payload, expected type)."""
        return [
            (name, getattr(self, name))
            for name in (
                "not_object",
                "null_payload",
                "missing_fields",
                "wrong_type",
                "bad_length",
                "huge_string",
                "unknown_container",
                "unicode_id",
                "surrogate_id",
                "bad_environment",
                "bad_ports",
                "bad_volumes",
                "bad_image",
                "bad_name",
                "bad_code_path",
                "bad_message",
                "bad_tail",
                "bad_request_id",
                "deep_nesting",
                "unknown_event",
                "unicode_junk_fields",
                "extra_arguments",
                "undecodable",
            )
        ]

    # ---------------------------------------------------------------- values

    def text(self, lo: int = 0, hi: int = 12, *, junk: list[str] = JUNK_TEXT) -> str:
        r = self.r
        wide = chr(r.randrange(0x80, 0x2FFFF))
        surrogate = "\ud800" <= wide <= "\udfff"
        alphabet = [*string.printable, *junk, wide if junk is JUNK_TEXT or not surrogate else "x"]
        return "".join(r.choice(alphabet) for _ in range(r.randint(lo, hi)))

    def scalar(self) -> Any:
        r = self.r
        return r.choice(
            [
                r.randint(-(2**63), 2**63),
                r.uniform(-1e308, 1e308),
                r.choice([True, False]),
                self.text(),
                None,
                r.choice([0, -1, 2**53 + 1, 10**30, 1e-300, -0.0, float("nan"), float("inf")]),
            ]
        )

    def junk(self, depth: int = 3) -> Any:
        """Any JSON value, a little nested."""
        r = self.r
        if depth <= 0 or r.random() < 0.4:
            return self.scalar()
        if r.random() < 0.5:
            return [self.junk(depth - 1) for _ in range(r.randint(0, 4))]
        return {self.text(0, 8): self.junk(depth - 1) for _ in range(r.randint(0, 4))}

    def not_string(self) -> Any:
        r = self.r
        return r.choice(
            [
                None,
                r.randint(-(10**9), 10**9),
                r.random(),
                True,
                False,
                [],
                [self.text()],
                {},
                {"id": self.text()},
                3.5,
                [[[]]],
                {"$ne": None},
            ]
        )

    def non_object(self) -> Any:
        r = self.r
        return r.choice(
            [
                [self.junk() for _ in range(r.randint(0, 5))],
                self.text(0, 40),
                r.randint(-(10**12), 10**12),
                r.random() * 1e6,
                r.choice([True, False]),
                "",
                [[["nested", [None, {"a": [1]}]]]],
                ["container_id", "x"],
                [{"container_id": self.unknown_id()}],
            ]
        )

    def unknown_id(self) -> str:
        """Well-formed, never a prefix of a hex id, never a managed name."""
        r = self.r
        return r.choice(
            [
                f"zz-nosuch-{r.getrandbits(40):x}",
                "zz" + "".join(r.choice("0123456789abcdef") for _ in range(62)),
                f"zz{self.text(1, 30, junk=UTF8_TEXT)}",
                "z" * r.randint(1, 256),
                r.choice(
                    [
                        "zz/../../etc/passwd",
                        "zz;rm -rf /",
                        "zz\x00",
                        "zz*",
                        "zz%",
                        "z.",
                        "z-",
                        "Z" * 64,
                        "zz\n",
                        "zz ",
                        "zz\\x",
                    ]
                ),
            ]
        )

    def huge(self) -> str:
        """10,000+ characters, and under the server's 1 MB message cap once JSON-escaped (a
        larger message closes the client: another promise, tested on its own)."""
        r = self.r
        unit = r.choice(["z", "\u00e9", "\ud800", "😀", "ab/"])
        return unit * r.randint(10_000, 700_000 // (len(json.dumps(unit)) - 2))

    def spec_ok(self) -> dict[str, Any]:
        """A create payload that would pass, to be spoilt in exactly one way."""
        return {
            "name": f"zz-bad-{self.r.getrandbits(32):x}",
            "image": "flowmgr-test-busybox:latest",
        }

    # ---------------------------------------------------------------- shapes

    def not_object(self) -> tuple[str, Any, str]:
        return self.r.choice([*EVENTS, "list_containers"]), self.non_object(), INVALID

    def null_payload(self) -> tuple[str, Any, str]:
        # None reads as {}: every request but list_containers misses a field then.
        return self.r.choice([e for e in EVENTS if e != "list_containers"]), None, INVALID

    def missing_fields(self) -> tuple[str, Any, str]:
        r = self.r
        event = r.choice([e for e in EVENTS if e != "list_containers"])
        required = {
            "create_container": "name",
            "update_container": "code_path",
            "send_message": "message",
        }.get(event, "container_id")
        payload = {
            k: self.junk(2)
            for k in (self.text(0, 10) for _ in range(r.randint(0, 4)))
            if k not in {"name", "container_id", "code_path", "message", "request_id"}
        }
        if event in ("update_container", "send_message") and r.random() < 0.5:
            payload["container_id"] = self.unknown_id()[:256]
        payload.pop(required, None)
        if event == "update_container" and "container_id" not in payload and r.random() < 0.5:
            payload["code_path"] = self.code_dir  # the id is what is missing then
        return event, payload, INVALID

    def wrong_type(self) -> tuple[str, Any, str]:
        r = self.r
        event = r.choice([e for e in EVENTS if e != "list_containers"])
        fields = {
            "create_container": ["name", "image", "environment", "volumes", "ports"],
            "update_container": ["container_id", "code_path"],
            "send_message": ["container_id", "message"],
            "get_container_logs": ["container_id", "tail"],
        }.get(event, ["container_id"])
        payload = self.valid(event)
        field = r.choice(fields)
        if field in ("environment", "volumes", "ports", "message"):
            payload[field] = r.choice([self.text(), r.randint(0, 9), [self.junk(1)], True])
        elif field == "tail":
            payload[field] = r.choice(["10", 1.5, True, None, [10], {"n": 1}])
        else:
            value = self.not_string()
            payload[field] = 0 if value is None and field == "image" else value  # None: default
        return event, payload, INVALID

    def bad_length(self) -> tuple[str, Any, str]:
        r = self.r
        event = r.choice(
            [
                "start_container",
                "update_container",
                "create_container",
                "get_container_logs",
                "send_message",
            ]
        )
        payload = self.valid(event)
        if event == "update_container":
            field = r.choice(["container_id", "code_path"])
            payload[field] = (
                r.choice(["", "/" + "a" * 4097])
                if field == "code_path"
                else r.choice(["", "z" * 257])
            )
        elif event == "create_container":
            field = r.choice(["name", "image"])
            payload[field] = (
                r.choice(["", "z" * 129]) if field == "name" else r.choice(["", "a" * 513])
            )
        else:
            payload["container_id"] = r.choice(["", "z" * 257, "z" * 5000])
        return event, payload, INVALID

    def huge_string(self) -> tuple[str, Any, str]:
        r = self.r
        event = r.choice(
            [
                "stop_container",
                "create_container",
                "update_container",
                "list_containers",
                "get_container_status",
            ]
        )
        payload = self.valid(event)
        field = {
            "create_container": r.choice(["name", "image"]),
            "update_container": r.choice(["container_id", "code_path"]),
            "list_containers": "request_id",
        }.get(event, "container_id")
        payload[field] = self.huge()
        return event, payload, INVALID

    def unknown_container(self) -> tuple[str, Any, str]:
        event = self.r.choice([*BY_ID, "update_container", "send_message", "get_container_logs"])
        return event, self.valid(event), NOT_FOUND

    def unicode_id(self) -> tuple[str, Any, str]:
        event = self.r.choice(BY_ID)
        return event, {"container_id": "zz" + "".join(self.r.sample(UTF8_TEXT, 4))}, NOT_FOUND

    def surrogate_id(self) -> tuple[str, Any, str]:
        event = self.r.choice([*BY_ID, "update_container", "send_message", "get_container_logs"])
        payload = self.valid(event)
        payload["container_id"] = f"zz{self.r.choice(SURROGATES)}{payload['container_id']}"[:256]
        return event, payload, INVALID

    def bad_environment(self) -> tuple[str, Any, str]:
        r = self.r
        spec = self.spec_ok()
        spec["environment"] = r.choice(
            [
                {"": "x"},
                {"A=B": "x"},
                {"A\x00": "x"},
                {"FLOW_SOCKET": "/tmp/x"},
                {"OK": "a\x00b"},
                {"PORT": r.randint(0, 99)},
                {"OK": None},
                {"OK": ["x"]},
                {"OK": {"nested": "x"}},
                {"A": "1", "B": True},
                {"DB_PASSWORD": 12345},
                {"=": "="},
                {"X\ud800": "\x00"},
            ]
        )
        return "create_container", spec, INVALID

    def bad_ports(self) -> tuple[str, Any, str]:
        r = self.r
        spec = self.spec_ok()
        spec["ports"] = r.choice(
            [
                {"80": 0},
                {"80": -1},
                {"80": 65536},
                {"80": 2**70},
                {"80": 80},
                {"80": 1023},
                {"80": "8080"},
                {"80": 8080.0},
                {"80": True},
                {"80": None},
                {"abc": 18080},
                {"80/icmp": 18080},
                {"0": 18080},
                {"65536": 18080},
                {"²": 18080},
                {"٨٠": 0},
                {"𝟠𝟘": 0},
                {"-80": 18080},
                {"80/": 18080},
                {"/tcp": 18080},
                {"": 18080},
                {"80": 18081, "81": 18081},
                {" 80": 18080},
                {"80\x00": 18080},
                {"80/tcp/udp": 18080},
                {"8" * 400: 18080},
            ]
        )
        return "create_container", spec, INVALID

    def bad_volumes(self) -> tuple[str, Any, str]:
        r = self.r
        spec = self.spec_ok()
        spec["volumes"] = r.choice(
            [
                {"/var/run/docker.sock": "/sock"},
                {"//var//run//docker.sock": "/s"},
                {"/": "/h"},
                {"/etc": "/etc2"},
                {"/proc": "/p"},
                {"relative/path": "/x"},
                {"": "/x"},
                {"/nonexistent-zz": "/x"},
                {self.code_dir: "relative"},
                {self.code_dir: "/"},
                {self.code_dir: "/a:b"},
                {self.code_dir: "/run/flowmgr"},
                {self.code_dir: ""},
                {self.code_dir: "/a\x00"},
                {self.code_dir: 5},
                {self.code_dir: None},
                {self.code_dir + "\ud800": "/x"},
                {self.code_dir: "/x\ud800"},
                {"/tmp/../var/run/docker.sock": "/s"},
                {"/" + "a" * 300: "/x"},
                {"/var/lib/docker": "/d"},
            ]
        )
        return "create_container", spec, INVALID

    def bad_image(self) -> tuple[str, Any, str]:
        spec = self.spec_ok()
        spec["image"] = self.r.choice(
            [
                "UPPER/Case",
                "a b",
                "::",
                "x@sha256:zz",
                "busybox:",
                ":tag",
                "-lead",
                "a//b",
                "a\x00",
                "\ud800",
                "x:" + "t" * 200,
                "ü",
                "a..b",
                "busybox\n",
                "busybox;rm",
                "../busybox",
            ]
        )
        return "create_container", spec, INVALID

    def bad_name(self) -> tuple[str, Any, str]:
        spec = self.spec_ok()
        spec["name"] = self.r.choice(
            [
                "-x",
                ".x",
                "_x",
                "a/b",
                "ü",
                "a b",
                "a:b",
                "a\x00",
                "a" * 64,
                "z" * 128,
                "a\n",
                "\ud800",
                "../x",
                "😀",
                "x" + "\u200b",
            ]
        )
        return "create_container", spec, INVALID

    def bad_code_path(self) -> tuple[str, Any, str]:
        # Policy first, then the lookup: a bad path is refused whatever the id.
        return (
            "update_container",
            {
                "container_id": self.unknown_id()[:256],
                "code_path": self.r.choice(
                    [
                        "relative",
                        "/",
                        "/etc",
                        "/proc/self",
                        "/var/lib/docker",
                        "/tmp/a\x00b",
                        "/tmp/\ud800",
                        "/tmp/x\ud800/y",
                        "/" + "a" * 300,
                        "/tmp/" + "a/" * 2000,
                        "/nonexistent-zz",
                        "/dev/null",
                        "/tmp/a\nb",
                        "~",
                        "/tmp/%s",
                        "\\\\server\\share",
                    ]
                ),
            },
            INVALID,
        )

    def bad_message(self) -> tuple[str, Any, str]:
        return (
            "send_message",
            {"container_id": self.unknown_id()[:256], "message": self.non_object()},
            INVALID,
        )

    def bad_tail(self) -> tuple[str, Any, str]:
        return (
            "get_container_logs",
            {
                "container_id": self.unknown_id()[:256],
                "tail": self.r.choice([-1, 10_001, 2**64, -(2**63), "5", 5.0, True, None, [], {}]),
            },
            INVALID,
        )

    def bad_request_id(self) -> tuple[str, Any, str]:
        r = self.r
        event = r.choice(EVENTS)
        payload = self.valid(event)
        payload["request_id"] = r.choice([5, 1.5, True, [], {"a": 1}, "r" * 257, self.huge()])
        return event, payload, INVALID

    def deep_nesting(self) -> tuple[str, Any, str]:
        r = self.r
        depth = r.randint(50, 400)
        nested: Any = self.text(0, 4)
        for _ in range(depth):
            nested = [nested] if r.random() < 0.5 else {self.text(1, 3): nested}
        kind = r.randrange(3)
        if kind == 0:  # a valid deep message to an unknown container
            return (
                "send_message",
                {"container_id": self.unknown_id()[:256], "message": {"deep": nested}},
                NOT_FOUND,
            )
        if kind == 1:  # a deep non-object
            return r.choice(EVENTS), [nested], INVALID
        event = r.choice(BY_ID)
        return event, {"container_id": nested}, INVALID

    def unknown_event(self) -> tuple[str, Any, str]:
        r = self.r
        name = r.choice(
            [
                self.text(1, 30),
                "Create_Container",
                "list_containers ",
                "container_created",
                "error",
                "connected",
                "z" * r.randint(81, 5000),
                "on_connect",
                "__init__",
                "_run",
                "trigger_event",
                "message",
                "*",
                "connect_error",
                "connect",
                "disconnect",
            ]
        )
        if name in EVENTS:
            name += "_"
        payload = r.choice([self.junk(), {}, None])
        return name, payload, INVALID

    def unicode_junk_fields(self) -> tuple[str, Any, str]:
        """Junk text in every string field of an otherwise valid create."""
        r = self.r
        spec = self.spec_ok()
        spec["name"] = "zz" + "".join(r.sample(NOT_NAME_TEXT, 3))
        spec["environment"] = {self.text(1, 6): "".join(r.sample(JUNK_TEXT, 2))}
        return "create_container", spec, INVALID

    def undecodable(self) -> tuple[str, Any, str]:
        """JSON the server's decoder refuses: an integer of more than 100 digits."""
        event = self.r.choice(EVENTS)
        return event, {"container_id": self.r.randint(10**100, 10**300)}, INVALID

    def extra_arguments(self) -> tuple[str, Any, str]:
        """Several arguments (a tuple is emitted as such): the first one is the request."""
        r = self.r
        event = r.choice([e for e in EVENTS if e != "list_containers"])
        if r.random() < 0.5:
            return event, (self.non_object(), self.junk()), INVALID
        if event == "create_container":
            return event, (self.bad_name()[1], self.junk()), INVALID
        return event, (self.valid(event), self.junk(), self.junk()), NOT_FOUND

    # ---------------------------------------------------------------- helpers

    def valid(self, event: str) -> dict[str, Any]:
        """A well-formed payload for `event` naming an unknown container."""
        if event == "create_container":
            return self.spec_ok()
        if event == "list_containers":
            return {}
        payload: dict[str, Any] = {"container_id": self.unknown_id()[:256]}
        if event == "update_container":
            payload["code_path"] = self.code_dir
        elif event == "send_message":
            payload["message"] = {"command": "echo", "junk": self.junk(2)}
        elif event == "get_container_logs":
            payload["tail"] = self.r.randint(0, 10_000)
        return payload
