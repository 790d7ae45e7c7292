"""Config loading: v1 list and v2 mapping formats, coercion rules, and one-line ConfigError messages."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.config.errors import ConfigError, SchemaError, SectionValueError
from mesh.config.loader import ConfigEntry, LoadedConfig, config_digest, load_config, parse_config
from mesh.config.schema import Duration, SectionSpec, section_keys

# --------------------------------------------------------------------------------------------------
# Example schemas (shaped like Receptor's sections)
# --------------------------------------------------------------------------------------------------


@dataclass
class TcpListenerConf:
    port: int = field(metadata={"doc": "TCP port to listen on"})
    bindaddr: str = "0.0.0.0"
    tls: str | None = None
    cost: float = 1.0
    nodecost: dict[str, float] = field(default_factory=dict)
    allowedpeers: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.cost <= 0:
            raise SectionValueError("cost", "must be greater than 0")


@dataclass
class TcpPeerConf:
    address: str
    redial: bool = True
    cost: float = 1.0


@dataclass
class NodeConf:
    id: str = ""
    datadir: str = "/tmp/receptor"
    firewallrules: list[dict[str, str]] = field(default_factory=list)
    maxidleconnectiontimeout: Duration = Duration(21.0)

    def validate(self) -> None:
        if self.maxidleconnectiontimeout < 21:
            raise SectionValueError("maxidleconnectiontimeout", "must be at least 21s")


@dataclass
class LogLevelConf:
    level: str = "error"


@dataclass
class ControlServiceConf:
    service: str = "control"
    filename: str | None = None
    permissions: int = 0o600


@dataclass
class LocalOnlyConf:
    local: bool = False


@dataclass
class WorkCommandConf:
    worktype: str
    command: str
    params: str = ""
    allowruntimeparams: bool = False
    weights: list[float] = field(default_factory=list)


@dataclass
class RenamedKeyConf:
    from_node: str = field(default="", metadata={"key": "fromnode", "doc": "renamed key"})
    max_hops: int = 30


@dataclass
class TraceConf:
    pass


SPECS: dict[str, SectionSpec] = {
    spec.name: spec
    for spec in [
        SectionSpec("tcp-listener", TcpListenerConf, bare="port", doc="Accept TCP peers"),
        SectionSpec("tcp-peer", TcpPeerConf, bare="address"),
        SectionSpec("node", NodeConf, singleton=True, bare="id"),
        SectionSpec("log-level", LogLevelConf, singleton=True, bare="level"),
        SectionSpec("control-service", ControlServiceConf),
        SectionSpec("local-only", LocalOnlyConf),
        SectionSpec("work-command", WorkCommandConf),
        SectionSpec("renamed", RenamedKeyConf),
        SectionSpec("trace", TraceConf),
    ]
}


def parse(text: str) -> LoadedConfig:
    return parse_config(text, SPECS, source="config.yml")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert "\n" not in str(info.value)
    return info.value


def tcp(**params: object) -> TcpListenerConf:
    """The value of a single tcp-listener entry built from ``params`` (v1 flow mapping)."""
    return only(parse("- tcp-listener: " + yaml.safe_dump(params, default_flow_style=True)), "tcp-listener")


def only(cfg: LoadedConfig, section: str) -> object:
    """The value of the single entry of ``section``."""
    (value,) = cfg.of(section)
    return value


V1_TEXT = """\
---
- node:
    id: foo
- log-level: debug
- tcp-listener:
    port: 2222
- tcp-listener: 2223
- control-service:
    filename: /tmp/foo.sock
- work-command:
    worktype: echo
    command: bash
    params: "-c \\"while read -r l; do echo $l; done\\""
    allowruntimeparams: true
- local-only
"""

V2_TEXT = """\
version: 2
node:
  id: foo
log-level: debug
tcp-listeners:
  - port: 2222
  - port: 2223
control-services:
  - filename: /tmp/foo.sock
work-commands:
  - worktype: echo
    command: bash
    params: "-c \\"while read -r l; do echo $l; done\\""
    allowruntimeparams: true
local-only:
"""


# --------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------


def test_v1_example_from_the_receptor_docs() -> None:
    cfg = parse(V1_TEXT)
    assert [e.section for e in cfg.entries] == [
        "node",
        "log-level",
        "tcp-listener",
        "tcp-listener",
        "control-service",
        "work-command",
        "local-only",
    ]
    assert [e.index for e in cfg.entries] == [1, 2, 3, 4, 5, 6, 7]
    assert cfg.one("node") == NodeConf(id="foo")
    assert cfg.one("log-level") == LogLevelConf("debug")
    assert cfg.of("tcp-listener") == [TcpListenerConf(port=2222), TcpListenerConf(port=2223)]
    assert cfg.of("control-service") == [ControlServiceConf(filename="/tmp/foo.sock")]
    (work,) = cfg.of("work-command")
    assert work.params == '-c "while read -r l; do echo $l; done"'
    assert work.allowruntimeparams is True
    assert cfg.of("local-only") == [LocalOnlyConf()]
    assert cfg.entries[2].raw == {"port": 2222}
    assert cfg.entries[3].raw == 2223
    assert cfg.entries[6].raw is None


def test_v1_and_v2_give_equal_results() -> None:
    v1, v2 = parse(V1_TEXT), parse(V2_TEXT)
    assert [(e.section, e.values) for e in v1.entries] == [(e.section, e.values) for e in v2.entries]
    assert [e.index for e in v2.entries] == [1, 2, 3, 4, 5, 6, 7]  # running count


def test_empty_file_is_an_empty_config() -> None:
    for text in ["", "\n", "# only a comment\n", "---\n", "[]", "version: 2\n"]:
        assert parse(text).entries == []


def test_v2_forms() -> None:
    cfg = parse(
        "version: '2'\n"
        "tcp-listener: {port: 1}\n"  # singular key with a mapping
        "tcp-listeners: {port: 2}\n"  # plural key with a single mapping
        "tcp_Listeners: [3, {port: 4}]\n"  # plural key, scalar items go to the bare key
        "tcp-peers:\n"  # plural key with nothing under it
        "trace:\n"
    )
    assert [v.port for v in cfg.of("tcp-listener")] == [1, 2, 3, 4]
    assert cfg.of("tcp-peer") == []
    assert cfg.of("trace") == [TraceConf()]


def test_v2_custom_plural_and_singular_only() -> None:
    specs = {
        "ip-router": SectionSpec("ip-router", LocalOnlyConf, plural="iprouters"),
        "work-kubernetes": SectionSpec("work-kubernetes", TcpPeerConf, bare="address", plural="work-kubernetes"),
    }
    cfg = parse_config("version: 2\niprouters: [{local: yes}]\nwork-kubernetes: [a, b]\n", specs)
    assert cfg.of("ip-router") == [LocalOnlyConf(True)]
    assert [p.address for p in cfg.of("work-kubernetes")] == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown section 'ip-routers'; did you mean 'iprouters'"):
        parse_config("version: 2\nip-routers: []\n", specs)


def test_v2_error_index_is_position_in_the_list() -> None:
    err = error_of("version: 2\ntcp-peers: [a]\ntcp-listeners:\n  - port: 1\n  - port: x\n")
    assert str(err) == "config.yml: tcp-listener (item 2): key 'port': expected an integer, got 'x'"
    err = error_of("version: 2\nnode: {idd: x}\n")
    assert str(err) == "config.yml: node: key 'idd': unknown key; did you mean 'id'? (known: datadir, firewallrules, id, maxidleconnectiontimeout)"


# --------------------------------------------------------------------------------------------------
# Names: case and separators
# --------------------------------------------------------------------------------------------------


def test_section_names_and_keys_ignore_case_and_separators() -> None:
    cfg = parse(
        "- TCP-Listener: {Port: 1, BindAddr: h, Allowed_Peers: [a]}\n"
        "- tcp_listener: {PORT: 2, bind-addr: i}\n"
        "- Log-Level: info\n"
    )
    assert cfg.of("TCP-LISTENER") == [
        TcpListenerConf(port=1, bindaddr="h", allowedpeers=["a"]),
        TcpListenerConf(port=2, bindaddr="i"),
    ]
    assert cfg.one("log_level") == LogLevelConf("info")


def test_metadata_key_and_attribute_name_both_match() -> None:
    assert only(parse("- renamed: {fromnode: a, MaxHops: 3}"), "renamed") == RenamedKeyConf("a", 3)
    assert only(parse("- renamed: {from_node: b}"), "renamed") == RenamedKeyConf("b")
    err = error_of("- renamed: {fromnod: a}")
    assert str(err) == "config.yml: renamed (item 1): key 'fromnod': unknown key; did you mean 'fromnode'? (known: fromnode, max_hops)"


def test_same_key_twice_in_different_case_is_an_error() -> None:
    err = error_of("- tcp-listener: {port: 1, Port: 2}")
    assert str(err) == "config.yml: tcp-listener (item 1): key 'Port': given twice (also as 'port'); keep one"


# --------------------------------------------------------------------------------------------------
# Coercion rules
# --------------------------------------------------------------------------------------------------

TRUE_WORDS = ["1", "t", "T", "y", "Y", "true", "TRUE", "True", "yes", "Yes", "YES"]
FALSE_WORDS = ["0", "f", "F", "n", "N", "false", "FALSE", "False", "no", "No", "NO"]


@pytest.mark.parametrize("word", TRUE_WORDS)
@pytest.mark.parametrize("quoted", [True, False])
def test_bool_true_words(word: str, quoted: bool) -> None:
    text = f"'{word}'" if quoted else word
    assert only(parse(f"- local-only: {{local: {text}}}"), "local-only").local is True


@pytest.mark.parametrize("word", FALSE_WORDS)
@pytest.mark.parametrize("quoted", [True, False])
def test_bool_false_words(word: str, quoted: bool) -> None:
    text = f"'{word}'" if quoted else word
    assert only(parse(f"- local-only: {{local: {text}}}"), "local-only").local is False


def test_bool_yaml_bools_and_errors() -> None:
    assert only(parse("- local-only: {local: on}"), "local-only").local is True
    err = error_of("- local-only: {local: maybe}")
    assert str(err) == "config.yml: local-only (item 1): key 'local': expected a boolean (true/false, yes/no, 1/0), got 'maybe'"
    assert "got 2" in str(error_of("- local-only: {local: 2}"))


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("0600", 0o600),  # YAML 1.1 octal, read by PyYAML as 384
        ("'0600'", 0o600),  # Go base-prefix rule on a string
        ("'0_600'", 0o600),
        ("0x10", 16),
        ("'0x10'", 16),
        ("'0o17'", 15),
        ("'0b101'", 5),
        ("0b101", 5),
        ("'-0600'", -384),
        ("' 42 '", 42),
        ("1_000", 1000),
        ("0", 0),
        ("'0'", 0),
    ],
)
def test_int_coercion(written: str, value: int) -> None:
    cs = only(parse(f"- control-service: {{permissions: {written}}}"), "control-service")
    assert cs.permissions == value and type(cs.permissions) is int


@pytest.mark.parametrize("written", ["abc", "'08'", "1.5", "2222.0", "true", "[1]", "'0x'", "'1e3'", "'\u0661'"])
def test_int_rejects(written: str) -> None:
    err = error_of(f"- control-service: {{permissions: {written}}}")
    assert err.key == "permissions" and err.message.startswith("expected an integer, got ")


def test_int_out_of_64_bit_range() -> None:
    err = error_of("- control-service: {permissions: 9223372036854775808}")
    assert err.message == "expected an integer, got 9223372036854775808 (out of range)"


@pytest.mark.parametrize(("written", "value"), [("2", 2.0), ("2.5", 2.5), ("'3.5'", 3.5), ("1e3", 1000.0), ("0x10", 16.0)])
def test_float_coercion(written: str, value: float) -> None:
    cost = only(parse(f"- tcp-listener: {{port: 1, cost: {written}}}"), "tcp-listener").cost
    assert cost == value and type(cost) is float


def test_float_rejects() -> None:
    err = error_of("- tcp-listener: {port: 1, cost: cheap}")
    assert str(err) == "config.yml: tcp-listener (item 1): key 'cost': expected a number, got 'cheap'"
    assert "got true" in str(error_of("- tcp-listener: {port: 1, cost: true}"))


def test_str_from_numbers_keeps_the_written_text() -> None:
    assert parse("- node: {id: 1234}").one("node").id == "1234"
    assert parse("- node: 0600").one("node").id == "0600"
    assert parse("- node: {id: 1.10}").one("node").id == "1.10"
    assert parse("- node: {id: 2024-01-01}").one("node").id == "2024-01-01"  # YAML timestamp stays text
    assert parse("- node: {id: '1:30'}").one("node").id == "1:30"
    assert parse("- node: {id: 1:30}").one("node").id == "1:30"  # YAML 1.1 sexagesimal stays text
    assert only(parse("- tcp-peer: host:2222"), "tcp-peer").address == "host:2222"


def test_str_rejects_bools_lists_and_maps() -> None:
    err = error_of("- node: {id: yes}")
    assert str(err) == (
        "config.yml: node (item 1): key 'id': expected a string, got true "
        "(YAML reads true/false/yes/no/on/off as booleans; put the value in quotes)"
    )
    assert str(error_of("- node: {id: [a]}")).endswith("key 'id': expected a string, got a list")
    assert str(error_of("- node: {id: {a: b}}")).endswith("key 'id': expected a string, got a mapping")
    assert str(error_of("- node: {id: !!binary aGk=}")).endswith("key 'id': expected a string, got binary data")


def test_list_wraps_scalars_and_parses_json() -> None:
    assert tcp(port=1, allowedpeers="a").allowedpeers == ["a"]
    assert tcp(port=1, allowedpeers=["a", 12]).allowedpeers == ["a", "12"]
    assert tcp(port=1, allowedpeers='["a", "b"]').allowedpeers == ["a", "b"]
    assert tcp(port=1, allowedpeers=[]).allowedpeers == []
    wc = only(parse("- work-command: {worktype: a, command: b, weights: 2}"), "work-command")
    assert wc.weights == [2.0]
    wc = only(parse("- work-command: {worktype: a, command: b, weights: '[1, 2.5]'}"), "work-command")
    assert wc.weights == [1.0, 2.5]


def test_list_errors() -> None:
    err = error_of("- tcp-listener: {port: 1, allowedpeers: [a, [b]]}")
    assert str(err) == "config.yml: tcp-listener (item 1): key 'allowedpeers': element 2: expected a string, got a list"
    err = error_of("- tcp-listener: {port: 1, allowedpeers: {a: b}}")
    assert err.message == "expected a list of strings, got a mapping"
    err = error_of("- tcp-listener: {port: 1, allowedpeers: '[a'}")
    assert err.message.startswith("expected a list of strings; the string starts like JSON but is not valid JSON (")


def test_map_coercion_and_errors() -> None:
    assert tcp(port=1, nodecost={"a": 2, "b": "3.5"}).nodecost == {"a": 2.0, "b": 3.5}
    assert tcp(port=1, nodecost='{"a": 1.5}').nodecost == {"a": 1.5}
    assert only(parse("- tcp-listener: {port: 1, nodecost: {1234: 2}}"), "tcp-listener").nodecost == {"1234": 2.0}
    err = error_of("- tcp-listener: {port: 1, nodecost: {a: x}}")
    assert str(err) == "config.yml: tcp-listener (item 1): key 'nodecost': value for 'a': expected a number, got 'x'"
    err = error_of("- tcp-listener: {port: 1, nodecost: 5}")
    assert err.message == "expected a mapping of strings to numbers, got 5"
    err = error_of("- tcp-listener: {port: 1, nodecost: {true: 1}}")
    assert err.message == "mapping keys must be strings, got true"


def test_firewall_rules_list_of_maps() -> None:
    text = """\
- node:
    id: a
    firewallrules:
      - action: reject
        fromnode: /b.*/
      - {Action: Accept, tonode: 1234}
"""
    assert parse(text).one("node").firewallrules == [
        {"action": "reject", "fromnode": "/b.*/"},
        {"Action": "Accept", "tonode": "1234"},
    ]
    # A single mapping, or a JSON string, is accepted too.
    assert parse("- node: {firewallrules: {action: drop}}").one("node").firewallrules == [{"action": "drop"}]
    one_json = "- node: {firewallrules: '{\"action\": \"drop\"}'}"
    assert parse(one_json).one("node").firewallrules == [{"action": "drop"}]
    list_json = "- node: {firewallrules: '[{\"action\": \"drop\"}]'}"
    assert parse(list_json).one("node").firewallrules == [{"action": "drop"}]
    err = error_of("- node: {firewallrules: [{action: [drop]}]}")
    assert err.message == "element 1: value for 'action': expected a string, got a list"
    err = error_of("- node: {firewallrules: drop}")
    assert err.message == "element 1: expected a mapping of strings to strings, got 'drop'"


def test_duration_fields() -> None:
    assert parse("- node: {maxidleconnectiontimeout: 1m30s}").one("node").maxidleconnectiontimeout == 90.0
    assert parse("- node: {maxidleconnectiontimeout: '1.5h'}").one("node").maxidleconnectiontimeout == 5400.0
    assert parse("- node: {}").one("node").maxidleconnectiontimeout == 21.0
    err = error_of("- node: {maxidleconnectiontimeout: 30}")
    assert str(err) == (
        "config.yml: node (item 1): key 'maxidleconnectiontimeout': expected a duration such as '30s', '1m30s' "
        "or '500ms', got 30 (add a unit: ns, us, ms, s, m, h)"
    )
    err = error_of("- node: {maxidleconnectiontimeout: 3d}")
    assert err.message == "invalid duration '3d': unknown unit 'd'; use one of ns, us, ms, s, m, h"
    # Zero parses; the schema's validator then rejects it with the key named.
    err = error_of("- node: {maxidleconnectiontimeout: 0}")
    assert str(err) == "config.yml: node (item 1): key 'maxidleconnectiontimeout': must be at least 21s"


def test_null_values() -> None:
    assert tcp(port=1, tls=None).tls is None  # optional key
    assert tcp(port=1, bindaddr=None).bindaddr == "0.0.0.0"  # `key:` with nothing means the default
    err = error_of("- tcp-listener: {port: null}")
    assert str(err) == "config.yml: tcp-listener (item 1): key 'port': expected an integer, got null"


def test_bare_values() -> None:
    assert parse("- log-level: debug").one("log-level") == LogLevelConf("debug")
    assert parse("- log-level:").one("log-level") == LogLevelConf("error")
    assert parse("- log-level").one("log-level") == LogLevelConf("error")
    assert only(parse("- tcp-listener: '2222'"), "tcp-listener").port == 2222


# --------------------------------------------------------------------------------------------------
# Error messages: exact one-line shapes
# --------------------------------------------------------------------------------------------------


def test_unknown_key_with_suggestion() -> None:
    err = error_of("- tcp-peer: a\n- local-only\n- tcp-listener: {prot: 2222}")
    assert str(err) == (
        "config.yml: tcp-listener (item 3): key 'prot': unknown key; did you mean 'port'? "
        "(known: allowedpeers, bindaddr, cost, nodecost, port, tls)"
    )
    assert (err.file, err.section, err.index, err.key) == ("config.yml", "tcp-listener", 3, "prot")


def test_unknown_key_without_suggestion_and_section_without_keys() -> None:
    err = error_of("- log-level: {zzz: 1}")
    assert str(err) == "config.yml: log-level (item 1): key 'zzz': unknown key (known: level)"
    err = error_of("- trace: {x: 1}")
    assert str(err) == "config.yml: trace (item 1): key 'x': unknown key; this section takes no keys"


def test_missing_required_key() -> None:
    err = error_of("- tcp-listener:\n    bindaddr: x")
    assert str(err) == "config.yml: tcp-listener (item 1): missing required key 'port' (integer)"
    assert err.key == "port"
    err = error_of("- work-command: {worktype: x}")
    assert str(err) == "config.yml: work-command (item 1): missing required key 'command' (string)"
    assert str(error_of("- tcp-listener")) == "config.yml: tcp-listener (item 1): missing required key 'port' (integer)"


def test_bad_value() -> None:
    err = error_of("- node: a\n- log-level: info\n- tcp-listener: {port: abc}")
    assert str(err) == "config.yml: tcp-listener (item 3): key 'port': expected an integer, got 'abc'"


def test_unknown_section() -> None:
    err = error_of("- tcp-listner: {port: 1}")
    assert str(err) == "config.yml: unknown section 'tcp-listner'; did you mean 'tcp-listener'?"
    err = error_of("- qqq")
    assert str(err) == (
        "config.yml: unknown section 'qqq' (known: control-service, local-only, log-level, node, renamed, "
        "tcp-listener, tcp-peer, trace, work-command)"
    )
    # v1 uses singular names; the suggestion points at the singular one.
    assert str(error_of("- tcp-listeners: {port: 1}")).endswith("did you mean 'tcp-listener'?")


def test_validator_errors_name_the_key() -> None:
    err = error_of("- tcp-listener: {port: 1, cost: 0}")
    assert str(err) == "config.yml: tcp-listener (item 1): key 'cost': must be greater than 0"


def test_validator_plain_value_error_is_a_config_error() -> None:
    @dataclass
    class Strict:
        n: int = 0

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("n must not be negative")

    err = (lambda: parse_config("- strict: {n: -1}", {"strict": SectionSpec("strict", Strict)}))
    with pytest.raises(ConfigError) as info:
        err()
    assert str(info.value) == "<string>: strict (item 1): n must not be negative"


def test_singleton_twice() -> None:
    err = error_of("- node: a\n- tcp-listener: 1\n- node: b")
    assert str(err) == "config.yml: node (item 3): section 'node' may appear only once (first at item 1); merge the entries"
    err = error_of("version: 2\nnode: {id: a}\nNode: {id: b}\n")
    assert str(err) == "config.yml: node: section 'node' may appear only once; merge the entries"


def test_list_items_must_have_one_section() -> None:
    err = error_of("- tcp-listener:\n  port: 1\n")
    assert str(err) == (
        "config.yml: item 1: each list item must have exactly one section name, found 2 ('tcp-listener', 'port'); "
        "indent the keys further than the section name 'tcp-listener'"
    )
    err = error_of("- node: a\n  log-level: debug\n")
    assert err.message.endswith("found 2 ('node', 'log-level'); start each section with its own '- '")
    assert error_of("- {}").message.startswith("each list item must have exactly one section name, found an empty mapping")
    err = error_of("- [a]")
    assert str(err) == "config.yml: item 1: each list item must be a section name or a mapping '- section: {key: value}', got a list"


def test_section_params_shape_errors() -> None:
    err = error_of("- control-service: x")
    assert str(err) == "config.yml: control-service (item 1): expected a mapping of keys, got 'x' (known: filename, permissions, service)"
    err = error_of("- control-service:\n    - filename: x")
    assert err.message == "expected a mapping of keys, got a list; write the keys without a leading '-' (known: filename, permissions, service)"
    err = error_of("- trace: 1")
    assert err.message == "expected a mapping of keys, got 1 (this section takes no keys)"


def test_top_level_shape_errors() -> None:
    assert str(error_of("hello")) == "config.yml: the top level must be a list of sections (or a mapping with `version: 2`), got 'hello'"
    assert str(error_of("42")).endswith("got 42")
    assert str(error_of("node: {id: a}")) == "config.yml: a mapping config needs `version: 2`; or use the list format (- section: {key: value})"
    assert str(error_of("version: 3\n")) == "config.yml: unsupported config version 3; write `version: 2`, or use the list format"
    assert "unsupported config version true" in str(error_of("version: yes\n"))


def test_yaml_syntax_errors_have_line_and_column() -> None:
    err = error_of("- node:\n    id: a\n  - tcp-listener: 1\n")
    assert str(err).startswith("config.yml: line 3, column 3: YAML syntax error: ")
    assert (err.line, err.column) == (3, 3)
    err = error_of("- node: {id: a\n")
    assert str(err).startswith("config.yml: line 2, column 1: YAML syntax error: expected ',' or '}'")
    err = error_of("- node:\n\tid: a\n")
    assert str(err).endswith("YAML does not allow tabs for indentation, use spaces")
    err = error_of("- node: a\n---\n- node: b\n")
    assert "expected a single document" in str(err)
    err = error_of("- node: !custom a\n")
    assert "could not determine a constructor for the tag '!custom'" in str(err)
    err = error_of("- node: a\x00\n")
    assert str(err).startswith("config.yml: line 1, column 10: YAML syntax error: character '\\x00' is not allowed")


def test_duplicate_yaml_keys_are_reported() -> None:
    err = error_of("- tcp-listener:\n    port: 1\n    cost: 2\n    port: 3\n")
    assert str(err) == "config.yml: line 4, column 5: duplicate key 'port' (first at line 2); keep only one"
    err = error_of("version: 2\nnode: {id: a}\nlog-level: info\nnode: {id: b}\n")
    assert str(err) == "config.yml: line 4, column 1: duplicate key 'node' (first at line 2); keep only one"
    # YAML merge keys are not duplicates.
    cfg = parse("- tcp-listener: &base {port: 1, cost: 2}\n- tcp-listener: {<<: *base, port: 5}\n")
    assert [(v.port, v.cost) for v in cfg.of("tcp-listener")] == [(1, 2.0), (5, 2.0)]


def test_recursive_aliases_and_alias_bombs() -> None:
    err = error_of("- node: &a [*a]\n")
    assert str(err) == "config.yml: a YAML alias refers to a collection that contains it; remove the recursion"
    bomb = ["a: &a [x,x,x,x,x,x,x,x,x,x]"]
    for i in range(1, 8):
        prev = chr(ord("a") + i - 1)
        bomb.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + prev] * 10)}]")
    err = error_of("\n".join(bomb) + "\nversion: 2\n")
    assert "more than 100000 values once YAML aliases are expanded" in str(err)


def test_deep_nesting_is_a_config_error() -> None:
    err = error_of("- node: " + "[" * 5000 + "]" * 5000)
    assert isinstance(err, ConfigError)


def test_config_error_pickles() -> None:
    err = error_of("- tcp-listener: {port: abc}")
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.key == "port" and copy.index == 1


# --------------------------------------------------------------------------------------------------
# Files, accessors, digests, schema errors
# --------------------------------------------------------------------------------------------------


def test_load_config_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "receptor.yml"
    path.write_bytes(b"\xef\xbb\xbf" + V1_TEXT.encode())  # a UTF-8 BOM is fine
    cfg = load_config(path, SPECS)
    assert cfg.path == str(path)
    assert cfg.one("node") == NodeConf(id="foo")

    path.write_text("- tcp-listener: {port: x}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, SPECS)
    assert str(info.value) == f"{path}: tcp-listener (item 1): key 'port': expected an integer, got 'x'"
    assert info.value.file == str(path)


def test_load_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yml", SPECS)
    assert str(info.value) == f"{tmp_path / 'missing.yml'}: cannot read config file: No such file or directory"
    with pytest.raises(ConfigError, match="cannot read config file: Is a directory"):
        load_config(tmp_path, SPECS)
    bad = tmp_path / "latin1.yml"
    bad.write_bytes(b"- node: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(byte 0xe9 at offset 11\); save it as UTF-8"):
        load_config(bad, SPECS)


def test_of_and_one() -> None:
    cfg = parse("- tcp-listener: 1\n- node: a")
    assert cfg.one("log-level") is None
    assert cfg.of("tcp-peer") == []
    with pytest.raises(ValueError, match="not a singleton"):
        cfg.one("tcp-listener")
    with pytest.raises(KeyError, match="no config section 'tcp-listenr'"):
        cfg.of("tcp-listenr")


def test_config_digest() -> None:
    v1 = parse("- node: {id: a}\n- tcp-listener: {port: 1, cost: 2}\n- local-only\n")
    v2 = parse("version: 2\nnode: {ID: a}\ntcp-listeners: [{cost: 2, port: 1}]\nlocal-only:\n")
    assert [config_digest(e) for e in v1.entries] == [config_digest(e) for e in v2.entries]
    a = parse("- tcp-listener: {port: 1, Bind_Addr: x}").entries[0]
    b = parse("- tcp-listener: {bindaddr: x, PORT: 1}").entries[0]
    c = parse("- tcp-listener: {bindaddr: y, port: 1}").entries[0]
    assert config_digest(a) == config_digest(b) == '{"params":{"bindaddr":"x","port":1},"section":"tcp-listener"}'
    assert config_digest(a) != config_digest(c)
    odd = ConfigEntry("x", 1, None, {"k": [b"hi", {2, 1}, float("nan"), (1,)], 3: None})
    assert config_digest(odd) == '{"params":{"3":null,"k":["aGk=",[1,2],"nan",[1]]},"section":"x"}'


def test_section_keys_for_docs() -> None:
    keys = {k.name: k for k in section_keys(SPECS["tcp-listener"])}
    assert list(keys) == ["port", "bindaddr", "tls", "cost", "nodecost", "allowedpeers"]
    assert keys["port"].required and keys["port"].doc == "TCP port to listen on"
    assert keys["nodecost"].type.noun == "mapping of strings to numbers"
    assert keys["nodecost"].default_value() == {}
    assert keys["cost"].default_value() == 1.0
    assert SPECS["tcp-listener"].plural_key == "tcp-listeners"
    assert SPECS["tcp-listener"].bare_key is keys["port"]
    node_keys = {k.name: k for k in SPECS["node"].keys}
    assert node_keys["firewallrules"].type.noun == "list of mappings of strings to strings"
    assert node_keys["maxidleconnectiontimeout"].type.render(21.0) == "21s"


@dataclass
class BadType:
    x: tuple[int, int] = (1, 2)


@dataclass
class Colliding:
    bind_addr: str = ""
    bindaddr: str = ""


class NotADataclass:
    x: int = 1


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: SectionSpec("bad", BadType), "BadType.x: unsupported type"),
        (lambda: SectionSpec("bad", Colliding), "keys 'bind_addr' and 'bindaddr' both match 'bindaddr'"),
        (lambda: SectionSpec("bad", NotADataclass), "must be a @dataclass class"),
        (lambda: SectionSpec("Bad", LogLevelConf), "use lowercase letters"),
        (lambda: SectionSpec("bad", LogLevelConf, bare="lvl"), "bare field 'lvl' is not a field"),
        (lambda: SectionSpec("bad", LogLevelConf, plural="Bads"), "plural 'Bads'"),
        (lambda: parse_config("", {"a": SectionSpec("a", LogLevelConf), "b": SectionSpec("a", TraceConf)}), "registered twice"),
    ],
)
def test_schema_errors_for_plugin_authors(make, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        make()


# --------------------------------------------------------------------------------------------------
# Property: nothing but ConfigError ever escapes for user input
# --------------------------------------------------------------------------------------------------

_NAMES = st.sampled_from(
    [*SPECS, "tcp-listeners", "TCP-Listener", "version", "port", "Port", "cost", "id", "firewallrules",
     "nodecost", "allowedpeers", "maxidleconnectiontimeout", "level", "local", "permissions", "bogus", ""]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["0600", "0x10", "yes", "1m30s", "30", "[1, 2]", '{"a": 1}', "{", "[", "2", "1:30"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_NAMES, st.integers(), st.booleans(), st.none()), inner, max_size=4),
    ),
    max_leaves=20,
)
_DOCUMENTS = st.one_of(
    _VALUES,
    st.lists(st.one_of(_NAMES, st.dictionaries(_NAMES, _VALUES, min_size=1, max_size=2)), max_size=5),
    st.dictionaries(_NAMES, _VALUES, max_size=5).map(lambda d: {"version": 2, **d}),
)


def _only_config_errors(text: str) -> None:
    try:
        cfg = parse(text)
    except ConfigError as err:
        assert "\n" not in str(err)
        assert str(err).startswith("config.yml: ")
        return
    for entry in cfg.entries:
        config_digest(entry)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS)
def test_random_structures_only_raise_config_error(doc: object) -> None:
    _only_config_errors(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("-:{}[],'\"!&*#|>?% \n\t0123456789abxyz.\\@`~")), max_size=60))
def test_random_yamlish_text_only_raises_config_error(text: str) -> None:
    _only_config_errors(text)


@settings(max_examples=200)
@given(st.text(max_size=40))
def test_random_unicode_text_only_raises_config_error(text: str) -> None:
    _only_config_errors(text)
