"""A flow's Swarm ServiceSpec (server/core/swarm/spec.py): the single-host policy mapped onto
the service, a request's node allow-listed, templates in request values neutralised, and no
secret in a log line or an error."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings, load_settings
from server.core.errors import ConfigError, InternalError, InvalidRequest
from server.core.host_paths import Pin
from server.core.models import CreateSpec
from server.core.swarm.spec import (
    TMPFS_BYTES,
    SwarmNode,
    literal,
    masked,
    resolve_node,
    service_spec,
    socket_volume,
)

N1 = SwarmNode("a1b2c3d4e5f6g7h8i9j0k1l2m", "node-1")
N2 = SwarmNode("zyxwvutsrqponmlkjihgfedcb", "node-2")
NODES = (N1, N2)
SOCK = {
    "Type": "volume",
    "Source": "flowmgr-sock-web",
    "Target": "/run/flowmgr",
    "ReadOnly": False,
    "VolumeOptions": {
        "NoCopy": True,
        "Labels": {"flowmgr.managed": "true", "flowmgr.instance": "default", "flowmgr.name": "web"},
    },
}
"""The flow's socket volume mount (docs/CLUSTER.md "The flow channel follows the flow")."""
SECRET = "hunter2-very-secret-value"


def _settings(**overrides: Any) -> Settings:
    return load_settings(None, env={}, **overrides)


def _spec(**kwargs: Any) -> CreateSpec:
    return CreateSpec(**{"name": "web", **kwargs})


def _build(spec: CreateSpec | None = None, settings: Settings | None = None, **kw: Any) -> Any:
    return service_spec(
        spec or _spec(),
        settings or _settings(),
        labels=kw.pop("labels", {}),
        nodes=kw.pop("nodes", NODES),
        **kw,
    )


def _container(out: dict[str, Any]) -> dict[str, Any]:
    return out["TaskTemplate"]["ContainerSpec"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the mapping


def test_defaults_map_the_single_host_policy() -> None:
    out = _build(labels={"flowmgr.test": "t1"})
    assert out["Name"] == "web"
    assert out["Mode"] == {"Replicated": {"Replicas": 1}}
    want_labels = {
        "flowmgr.test": "t1",
        "flowmgr.managed": "true",
        "flowmgr.instance": "default",
        "flowmgr.name": "web",
    }
    assert out["Labels"] == want_labels
    c = _container(out)
    assert c["Labels"] == want_labels, "task containers carry the labels too (the agent's key)"
    assert c["Image"] == "flow:latest"
    assert c["Env"] == ["FLOW_SOCKET=/run/flowmgr/flow.sock"]
    assert c["CapabilityDrop"] == ["ALL"] and "CapabilityAdd" not in c
    assert c["ReadOnly"] is False
    assert c["StopGracePeriod"] == 10 * 10**9
    assert "Args" not in c and "Command" not in c, "the image's entrypoint and command stay"
    assert c["Mounts"] == [SOCK]
    task = out["TaskTemplate"]
    assert task["Resources"] == {
        "Limits": {"MemoryBytes": 512 << 20, "NanoCPUs": 10**9, "Pids": 512}
    }
    assert task["RestartPolicy"] == {"Condition": "none"}
    assert task["Placement"] == {"Preferences": [{"Spread": {"SpreadDescriptor": "node.id"}}]}
    assert task["LogDriver"] == {
        "Name": "json-file",
        "Options": {"max-size": "10m", "max-file": "3"},
    }
    assert out["UpdateConfig"]["Order"] == "stop-first", "never two copies during a restart"
    assert "EndpointSpec" not in out
    json.dumps(out)  # the request body: plain JSON


def test_configured_limits_capabilities_and_read_only_root() -> None:
    s = _settings(
        docker__memory_limit="256m",
        docker__cpu_limit=0.5,
        docker__pids_limit=64,
        docker__cap_add=["NET_BIND_SERVICE"],
        docker__read_only=True,
        docker__stop_timeout=3,
        docker__default_image="flowmgr-test-busybox:latest",
    )
    out = _build(_spec(memory_limit="64m", command=["sleep", "60"]), s)
    c = _container(out)
    assert c["Image"] == "flowmgr-test-busybox:latest"
    assert c["CapabilityAdd"] == ["NET_BIND_SERVICE"] and c["CapabilityDrop"] == ["ALL"]
    assert c["ReadOnly"] is True
    assert {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": TMPFS_BYTES}} in c[
        "Mounts"
    ]
    assert c["Args"] == ["sleep", "60"], "a request's command replaces CMD, as on one host"
    assert c["StopGracePeriod"] == 3 * 10**9
    limits = out["TaskTemplate"]["Resources"]["Limits"]
    assert limits == {"MemoryBytes": 64 << 20, "NanoCPUs": 500_000_000, "Pids": 64}


@pytest.mark.parametrize(
    ("policy", "retries", "want"),
    [
        ("no", 0, {"Condition": "none"}),
        ("on-failure", 0, {"Condition": "on-failure", "MaxAttempts": 0}),
        ("on-failure", 4, {"Condition": "on-failure", "MaxAttempts": 4}),
        ("always", 0, {"Condition": "any"}),
        ("unless-stopped", 0, {"Condition": "any"}),
    ],
)
def test_restart_policy(policy: str, retries: int, want: dict[str, Any]) -> None:
    s = _settings(docker__restart_policy=policy, docker__restart_max_retries=retries)
    assert _build(settings=s)["TaskTemplate"]["RestartPolicy"] == want


def test_binds_read_only_unless_the_pin_says_rw_and_the_socket_dir_last() -> None:
    pins = (
        Pin("/srv/data/in", "/in", "ro", "/srv/data", 1, 2),
        Pin("/srv/data/out", "/out", "rw", "/srv/data", 1, 3),
    )
    mounts = _container(_build(_spec(binds=pins)))["Mounts"]
    assert mounts == [
        {"Type": "bind", "Source": "/srv/data/in", "Target": "/in", "ReadOnly": True},
        {"Type": "bind", "Source": "/srv/data/out", "Target": "/out", "ReadOnly": False},
        SOCK,
    ]


def test_ports_are_published_on_the_node_that_runs_the_flow() -> None:
    out = _build(_spec(ports={"8080": 18080, "53/udp": 10053}))
    assert out["EndpointSpec"] == {
        "Ports": [
            {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 18080, "PublishMode": "host"},
            {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 10053, "PublishMode": "host"},
        ]
    }
    assert json.loads(out["Labels"]["flowmgr.ports"]) == {"8080": 18080, "53/udp": 10053}


def test_placement_from_config_and_a_node_by_hostname_or_id() -> None:
    s = _settings(
        cluster__placement=["node.labels.flows==true", "node.role != manager"],
        cluster__spread="node.labels.zone",
    )
    by_name = _build(settings=s, node="node-2")["TaskTemplate"]["Placement"]
    assert by_name == {
        "Constraints": ["node.labels.flows==true", "node.role != manager", f"node.id=={N2.id}"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
    }
    by_id = _build(settings=s, node=N1.id)["TaskTemplate"]["Placement"]
    assert by_id["Constraints"][-1] == f"node.id=={N1.id}"


def test_no_spread_and_no_constraints_means_no_placement() -> None:
    out = _build(settings=_settings(cluster__spread=None))
    assert "Placement" not in out["TaskTemplate"]


def test_created_stopped_is_zero_replicas_and_nothing_else() -> None:
    assert _build(replicas=0)["Mode"] == {"Replicated": {"Replicas": 0}}
    with pytest.raises(InternalError):
        _build(replicas=2)


def test_managed_labels_are_never_the_callers() -> None:
    out = _build(
        labels={"flowmgr.managed": "false", "flowmgr.instance": "other", "flowmgr.name": "x"}
    )
    assert out["Labels"]["flowmgr.managed"] == "true"
    assert out["Labels"]["flowmgr.instance"] == "default"
    assert out["Labels"]["flowmgr.name"] == "web"


def test_the_socket_volume_is_named_by_the_flow_and_carries_the_managed_labels() -> None:
    settings = _settings(docker__instance="blue", docker__socket_mount="/run/sock")
    mounts = _container(_build(_spec(name="a.b_c-1"), settings, labels={"x": "y"}))["Mounts"]
    sock = [m for m in mounts if m["Target"] == "/run/sock"]
    assert sock == [
        {
            "Type": "volume",
            "Source": socket_volume("a.b_c-1"),
            "Target": "/run/sock",
            "ReadOnly": False,
            "VolumeOptions": {
                "NoCopy": True,
                "Labels": {
                    "flowmgr.managed": "true",
                    "flowmgr.instance": "blue",
                    "flowmgr.name": "a.b_c-1",
                },
            },
        }
    ]
    assert socket_volume("a.b_c-1") == "flowmgr-sock-a.b_c-1"
    assert not any(m["Type"] == "bind" and m["Target"] == "/run/sock" for m in mounts)


# ------------------------------------------------------------------ hostile input


@pytest.mark.parametrize(
    "node",
    [
        "x && node.role==manager",
        "node.id!=a",
        "node-1\nnode.role==manager",
        "node-1,node.role==manager",
        "node-1 ",
        " node-1",
        "NODE-1",
        "x" * 10_000,
        "",
        "unknown-node",
        N1.id[:-1],
        N1.id + "x",
        "{{.Node.ID}}",
        "*",
    ],
)
def test_a_request_node_never_becomes_a_constraint_unless_it_is_a_node(node: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        _build(node=node)
    assert err.value.details["field"] == "node"
    assert len(err.value.message) < 400, "a 10,000-character node is not echoed back"


@pytest.mark.parametrize("node", [1, ["node-1"], {"id": "x"}, True])
def test_a_node_that_is_not_a_string_is_refused(node: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        _build(node=node)
    assert err.value.details["field"] == "node"


def test_a_hostname_two_nodes_share_must_be_named_by_id() -> None:
    twin = SwarmNode("mmmmmmmmmmmmmmmmmmmmmmmmm", "node-1")
    with pytest.raises(InvalidRequest, match="by its ID") as err:
        resolve_node("node-1", [N1, twin])
    assert err.value.details["node_ids"] == sorted([N1.id, twin.id])
    assert resolve_node(twin.id, [N1, twin]) == twin


def test_an_id_wins_over_a_hostname_that_spells_it() -> None:
    impostor = SwarmNode("bbbbbbbbbbbbbbbbbbbbbbbbb", N1.id)
    assert resolve_node(N1.id, [impostor, N1]) == N1


def test_a_malformed_id_in_the_node_list_is_a_bug_not_a_constraint() -> None:
    evil = SwarmNode("x==y || node.role==manager", "evil")
    with pytest.raises(InternalError):
        _build(node="evil", nodes=[evil])


def test_an_empty_node_list_refuses_every_node() -> None:
    with pytest.raises(InvalidRequest, match="nodes: none"):
        _build(node="node-1", nodes=[])


@pytest.mark.parametrize(
    "constraint",
    [
        "node.role==manager && node.id!=x",
        "node.role==manager,node.id==x",
        "node.role==manager\nnode.id==x",
        "node.role==manager ",
        "node.labels.a==b|c",
        "node.labels.a==.*",
        "node.labels.a==(x)",
        "node.labels.a==x y",
        "engine.labels.a==b",
        "node.ip==10.0.0.1",
        "node.role=manager",
        "node.role===manager",
        "node.role==",
        "==manager",
        "node.labels.==x",
        "node.labels.a==b\x00",
        "node.role==manager\u2028",
        "node.role==mаnager",  # a Cyrillic a
        "node.labels." + "k" * 200 + "==v",
        "node.role==" + "m" * 300,
        "{{.Node.ID}}",
    ],
)
def test_placement_config_refuses_anything_but_one_plain_constraint(
    constraint: str, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"cluster": {"placement": ["node.role==manager", constraint]}}))
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert "cluster.placement" in err.value.message


@pytest.mark.parametrize(
    "constraint",
    [
        "node.role==manager",
        "node.role!=worker",
        "node.role == manager",
        "node.id==a1b2c3d4e5f6g7h8i9j0k1l2m",
        "node.hostname!=node-3",
        "node.platform.os==linux",
        "node.platform.arch==x86_64",
        "node.labels.flows==true",
        "node.labels.zone.name==eu-west-1",
    ],
)
def test_placement_config_accepts_plain_constraints(constraint: str) -> None:
    s = _settings(cluster__placement=[constraint])
    assert _build(settings=s)["TaskTemplate"]["Placement"]["Constraints"] == [constraint]


def test_template_syntax_in_request_values_reaches_the_flow_literally() -> None:
    env = {"GREETING": "{{.Node.Hostname}}", "BRACES": "a{{{b}}}c", "PLAIN": "x}}y"}
    pins = (Pin("/srv/{{x}}", "/in/{{.Task.ID}}", "ro", "/srv", 1, 2),)
    c = _container(_build(_spec(environment=env, binds=pins)))
    assert 'GREETING={{"{{"}}.Node.Hostname}}' in c["Env"]
    assert 'BRACES=a{{"{{"}}{b}}}c' in c["Env"]
    assert "PLAIN=x}}y" in c["Env"], "a lone '}}' is text to Go templates"
    assert c["Mounts"][0]["Source"] == '/srv/{{"{{"}}x}}'
    assert c["Mounts"][0]["Target"] == '/in/{{"{{"}}.Task.ID}}'


@pytest.mark.parametrize("text", ["", "plain", "{{", "{{{{", "{{-x-}}", '{{"{{"}}', "a{{b{{c}}d}}"])
def test_literal_expands_back_to_the_text(text: str) -> None:
    """The Go template `{{"{{"}}` is the text `{{`; anything else in `literal` is plain text
    (a miniature of text/template's lexing for this one case)."""
    escaped = literal(text)
    expanded = escaped.replace('{{"{{"}}', "\x00")
    assert "{{" not in expanded, "no action is left but the escapes"
    assert expanded.replace("\x00", "{{") == text


def test_secrets_never_in_logs_and_masked_for_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"DB_PASSWORD": SECRET, "API_TOKEN": SECRET, "OTHER": SECRET}
    out = _build(_spec(environment=env))
    assert f"DB_PASSWORD={SECRET}" in _container(out)["Env"]
    assert SECRET not in caplog.text
    shown = json.dumps(masked(out))
    assert SECRET not in shown
    assert "DB_PASSWORD=***" in shown and "OTHER=***" in shown
    assert _container(out)["Env"][0] == f"DB_PASSWORD={SECRET}", "masked() copies, never edits"
    # a refused node says nothing of the environment
    with pytest.raises(InvalidRequest) as err:
        _build(_spec(environment=env), node="nowhere")
    assert SECRET not in err.value.message and SECRET not in json.dumps(err.value.details)
    assert SECRET not in caplog.text
