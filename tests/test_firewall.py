"""Firewall rules: matching, first-match-wins, invalid rules rejected."""

import pytest

from mesh.net.firewall import Firewall, FirewallRuleError, Verdict, parse_rule


def test_exact_and_regex_matches_first_rule_wins():
    fw = Firewall([parse_rule({"Action": "Drop", "FromNode": "bad", "toservice": "control"}),
                   parse_rule({"action": "reject", "tonode": "/sec.*/"}),
                   parse_rule({"action": "accept"})])
    assert fw.check("bad", "x", "s", "control") is Verdict.DROP
    assert fw.check("bad", "x", "s", "other") is Verdict.ACCEPT
    assert fw.check("good", "secret", "s", "t") is Verdict.REJECT
    assert fw.check("good", "xsecret", "s", "t") is Verdict.ACCEPT  # regex is anchored


def test_empty_firewall_accepts():
    assert not Firewall()
    assert Firewall().check("a", "b", "c", "d") is Verdict.ACCEPT


@pytest.mark.parametrize("rule, needle", [
    ({"fromnode": "a"}, "'action' is required"),
    ({"action": "maybe"}, "not one of"),
    ({"action": "drop", "fromnode": "/([/"}, "regex"),
    ({"action": "drop", "color": "red"}, "unknown field"),
    ({"action": "drop", "tonode": 5}, "must be a string"),
])
def test_invalid_rules_are_errors(rule, needle):
    with pytest.raises(FirewallRuleError, match=needle):
        parse_rule(rule)
