"""Reading a config file's YAML: duplicate keys refused, numbers keep their text, every problem
a one-line :class:`~mesh.config.errors.ConfigError` with the line and column.

Imported only when a file is really parsed: a node whose config is unchanged since its last
start reads it from the config cache (:mod:`mesh.config.cache`) without PyYAML.
"""

from __future__ import annotations

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode

from .errors import ConfigError, quote
from .scalars import SourceFloat, SourceInt

#: Upper bound on values in a parsed file (after YAML alias expansion) — guards against "billion laughs".
MAX_VALUES = 100_000



class _DuplicateKeyError(yaml.MarkedYAMLError):
    """Two identical keys in one YAML mapping (PyYAML would silently keep the last)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reports duplicate keys and keeps the source text of numbers.

    Numbers keep their text so a string key written ``id: 0600`` stays ``"0600"``; YAML 1.1 sexagesimal
    numbers (``1:30``) and timestamps stay strings, as most people expect from a config file.
    """

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: dict[object, ScalarNode] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: SafeConstructor reports it
            if first is not None:
                raise _DuplicateKeyError(
                    None,
                    None,
                    f"duplicate key {quote(key_node.value)} (first at line {first.start_mark.line + 1}); keep only one",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: SafeConstructor, node: ScalarNode) -> object:
    if ":" in node.value:
        return node.value
    try:
        return SourceInt(loader.construct_yaml_int(node), node.value)
    except ValueError:  # e.g. "0x_", which the YAML 1.1 resolver accepts but cannot convert
        return node.value


def _construct_float(loader: SafeConstructor, node: ScalarNode) -> object:
    if ":" in node.value:
        return node.value
    try:
        return SourceFloat(loader.construct_yaml_float(node), node.value)
    except ValueError:
        return node.value


def _construct_text(loader: SafeConstructor, node: ScalarNode) -> object:
    return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)
_Loader.add_constructor("tag:yaml.org,2002:value", _construct_text)


def read_yaml(text: str, source: str) -> object:
    """The YAML document in ``text`` (``source`` names it in errors), checked for alias bombs."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _DuplicateKeyError as exc:
        mark = exc.problem_mark
        raise ConfigError(str(exc.problem), file=source, line=mark.line + 1, column=mark.column + 1) from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, source) from None
    except yaml.reader.ReaderError as exc:
        pos = exc.position
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        raise ConfigError(
            f"YAML syntax error: character {char!r} is not allowed ({exc.reason}); remove it",
            file=source,
            line=line,
            column=column,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML syntax error: {exc}", file=source) from None
    except RecursionError:
        raise ConfigError("YAML nesting is too deep", file=source) from None
    _check_tree(data, source)
    return data


def _syntax_error(exc: yaml.MarkedYAMLError, source: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    message = f"YAML syntax error: {problem}"
    if exc.context and exc.problem:
        ctx = exc.context
        cm = exc.context_mark
        if cm is not None and (mark is None or cm.line != mark.line or cm.column != mark.column):
            ctx += f" that starts at line {cm.line + 1}, column {cm.column + 1}"
        message += f" ({ctx})"
    if "'\\t'" in message:
        message += "; YAML does not allow tabs for indentation, use spaces"
    if mark is None:
        return ConfigError(message, file=source)
    return ConfigError(message, file=source, line=mark.line + 1, column=mark.column + 1)


def _check_tree(data: object, source: str) -> None:
    """Reject recursive aliases (``&a [*a]``) and alias bombs before anything walks the tree."""
    count = 0
    on_path: set[int] = set()
    stack: list[tuple[object, bool]] = [(data, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            continue
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"the file holds more than {MAX_VALUES} values once YAML aliases are expanded", file=source)
        if isinstance(node, (list, tuple, dict, set, frozenset)):
            if id(node) in on_path:
                raise ConfigError("a YAML alias refers to a collection that contains it; remove the recursion", file=source)
            on_path.add(id(node))
            stack.append((node, True))
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)
            stack.extend((child, False) for child in children)
