"""Firewall rules for data messages (reference §2.10), with invalid regexes rejected."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class FirewallRuleError(ValueError):
    """A firewall rule is malformed; the message says which field and why."""


class Verdict(Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    DROP = "drop"


MATCH_FIELDS = ("fromnode", "tonode", "fromservice", "toservice")


@dataclass(frozen=True)
class FirewallRule:
    """One rule: an action and the fields that must all match."""

    action: Verdict
    matchers: tuple[tuple[str, "re.Pattern[str] | str"], ...]

    def matches(self, values: dict[str, str]) -> bool:
        for name, matcher in self.matchers:
            value = values[name]
            if isinstance(matcher, str):
                if value != matcher:
                    return False
            elif matcher.fullmatch(value) is None:
                return False
        return True


def parse_rule(raw: dict[str, str], index: int = 1) -> FirewallRule:
    """Build a rule from its config map (keys case-insensitive)."""
    fields = {str(k).lower(): v for k, v in raw.items()}
    action = fields.pop("action", None)
    if not isinstance(action, str):
        raise FirewallRuleError(f"firewall rule {index}: 'action' is required "
                                f"(accept, reject or drop)")
    try:
        verdict = Verdict(action.lower())
    except ValueError:
        raise FirewallRuleError(f"firewall rule {index}: action {action!r} is not one of "
                                f"accept, reject, drop") from None
    matchers: list[tuple[str, re.Pattern[str] | str]] = []
    for name, value in fields.items():
        if name not in MATCH_FIELDS:
            raise FirewallRuleError(f"firewall rule {index}: unknown field {name!r} "
                                    f"(expected {', '.join(MATCH_FIELDS)})")
        if not isinstance(value, str):
            raise FirewallRuleError(f"firewall rule {index}: {name} must be a string")
        if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
            try:
                matchers.append((name, re.compile(value[1:-1])))
            except re.error as exc:
                raise FirewallRuleError(f"firewall rule {index}: {name} regex {value!r} is "
                                        f"invalid: {exc}") from None
        else:
            matchers.append((name, value))
    return FirewallRule(verdict, tuple(matchers))


class Firewall:
    """An ordered rule list; the first matching rule decides, default accept."""

    def __init__(self, rules: list[FirewallRule] | None = None) -> None:
        self.rules = list(rules or [])

    def __bool__(self) -> bool:
        return bool(self.rules)

    def check(self, from_node: str, to_node: str, from_service: str,
              to_service: str) -> Verdict:
        values = {"fromnode": from_node, "tonode": to_node, "fromservice": from_service,
                  "toservice": to_service}
        for rule in self.rules:
            if rule.matches(values):
                return rule.action
        return Verdict.ACCEPT
