"""Section schemas: what a config section may contain, and how YAML values are coerced into it.

A plugin describes each config section it owns with a :class:`SectionSpec` whose ``schema`` is a plain
``@dataclass``; each dataclass field is one key of the section::

    @dataclass
    class TcpListenerConfig:
        port: int = field(metadata={"doc": "TCP port to listen on"})
        bindaddr: str = "0.0.0.0"
        cost: float = 1.0
        nodecost: dict[str, float] = field(default_factory=dict)
        allowedpeers: list[str] = field(default_factory=list)

        def validate(self) -> None:
            if self.cost <= 0:
                raise SectionValueError("cost", "must be greater than 0")

    SectionSpec("tcp-listener", TcpListenerConfig, bare="port", doc="Accept peer links over TCP")

Supported field types: ``str``, ``int``, ``float``, ``bool``, :data:`Duration`, :data:`ByteSize`, ``X | None``, ``list[X]`` and
``dict[str, X]`` of those (e.g. ``list[str]``, ``dict[str, float]``, ``list[dict[str, str]]``). A field
without a default is required. ``field(metadata={"doc": ..., "key": "alt-name"})`` documents a key and
gives it the name used in files (the attribute name is accepted too).

Coercion follows Receptor (``ghjm/cmdline``): keys match ignoring case, ``-`` and ``_``; booleans accept
``1/t/T/y/Y/true/yes/...``; integers accept base prefixes (``0600`` is octal, ``0x10``); a scalar given for a
list becomes a one-element list; a string starting with ``[`` or ``{`` given for a list or map is JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, NewType

from .bytesize import SIZE_HELP, ByteSizeError, format_byte_size, parse_byte_size
from .duration import UNITS_HELP, DurationError, format_go_duration, parse_go_duration
from .errors import SchemaError, SectionValueError, quote
from .scalars import SourceFloat, SourceInt, normalize_key, normalize_section

__all__ = [
    "ByteSize",
    "Duration",
    "SectionSpec",
    "KeySpec",
    "ValueType",
    "CoercionError",
    "SourceInt",
    "SourceFloat",
    "section_keys",
    "normalize_key",
    "normalize_section",
    "describe_value",
]

#: Marker type for Go duration strings ("21s", "1h30m"); the loaded value is a float number of seconds.
Duration = NewType("Duration", float)
#: Marker type for sizes ("100M", "1GiB", 4096); the loaded value is an int number of bytes.
ByteSize = NewType("ByteSize", int)

_SECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_TRUE = frozenset({"1", "t", "T", "y", "Y", "true", "TRUE", "True", "yes", "Yes", "YES"})
_FALSE = frozenset({"0", "f", "F", "n", "N", "false", "FALSE", "False", "no", "No", "NO"})
_MISSING: Any = dataclasses.MISSING


# --------------------------------------------------------------------------------------------------
# Scalars as read from YAML
# --------------------------------------------------------------------------------------------------


def describe_value(value: object) -> str:
    """Short one-line rendering of a user value for "got ..." in error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (SourceInt, SourceFloat)):
        return value.text
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return quote(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, (set, frozenset)):
        return "a set"
    return f"a {type(value).__name__} value"


class CoercionError(ValueError):
    """A value cannot be coerced to a key's type; ``message`` is the part after ``key '...': ``."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


# --------------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------------


class ValueType:
    """How to coerce one YAML value into a field's Python type.

    ``noun`` names the type for "missing required key 'port' (integer)"; ``expected`` for
    "expected an integer, got ...".
    """

    noun: str = "value"
    expected: str = "a value"
    is_list = False
    is_map = False

    def convert(self, value: object) -> object:
        """Return the coerced value or raise :class:`CoercionError`."""
        raise NotImplementedError

    def mismatch(self, value: object, hint: str = "") -> CoercionError:
        return CoercionError(f"expected {self.expected}, got {describe_value(value)}" + (f" ({hint})" if hint else ""))

    def render(self, value: object) -> str:
        """Render a Python value of this type the way it would be written in a file (for docs)."""
        return json.dumps(value)


class _Str(ValueType):
    noun, expected = "string", "a string"

    def convert(self, value: object) -> object:
        if isinstance(value, str):
            return value
        if isinstance(value, (SourceInt, SourceFloat)):
            return value.text
        if isinstance(value, bool):
            raise self.mismatch(value, "YAML reads true/false/yes/no/on/off as booleans; put the value in quotes")
        if isinstance(value, (int, float)):  # from JSON
            return str(value)
        raise self.mismatch(value)

    def render(self, value: object) -> str:
        return str(value) if value != "" else '""'


class _Int(ValueType):
    noun, expected = "integer", "an integer"

    def convert(self, value: object) -> object:
        if isinstance(value, bool):
            raise self.mismatch(value)
        parsed: int | None = None
        if isinstance(value, int):
            parsed = int(value)
        elif isinstance(value, str):
            parsed = _parse_go_int(value)
        if parsed is None:
            raise self.mismatch(value)
        if not -(2**63) <= parsed < 2**63:  # Go ints are 64-bit
            raise self.mismatch(value, "out of range")
        return parsed

    def render(self, value: object) -> str:
        return str(value)


def _parse_go_int(text: str) -> int | None:
    """Parse like Go's ``strconv.ParseInt(s, 0, 64)``: ``0x``/``0o``/``0b`` prefixes, leading ``0`` is octal."""
    body = text.strip()
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if not body or not body.isascii() or body[0] == "_":
        return None
    try:
        if body[:2].lower() in ("0x", "0o", "0b"):
            return sign * int(body, 0)
        if len(body) > 1 and body[0] == "0":
            return sign * int(body[1:].removeprefix("_"), 8)
        return sign * int(body, 10)
    except ValueError:
        return None


class _Float(ValueType):
    noun, expected = "number", "a number"

    def convert(self, value: object) -> object:
        if isinstance(value, bool):
            raise self.mismatch(value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and value.strip().isascii():
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise self.mismatch(value)

    def render(self, value: object) -> str:
        return repr(value)


class _Bool(ValueType):
    noun, expected = "boolean", "a boolean (true/false, yes/no, 1/0)"

    def convert(self, value: object) -> object:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
        raise self.mismatch(value)

    def render(self, value: object) -> str:
        return "true" if value else "false"


class _Duration(ValueType):
    noun, expected = "duration", "a duration such as '30s', '1m30s' or '500ms'"

    def convert(self, value: object) -> object:
        if isinstance(value, bool):
            raise self.mismatch(value)
        if isinstance(value, (int, float)):
            if value == 0:
                return 0.0
            raise self.mismatch(value, f"add a unit: {UNITS_HELP}")
        if isinstance(value, str):
            try:
                return parse_go_duration(value.strip())
            except DurationError as exc:
                raise CoercionError(str(exc)) from None
        raise self.mismatch(value)

    def render(self, value: object) -> str:
        return format_go_duration(float(value))  # type: ignore[arg-type]


class _ByteSize(ValueType):
    noun, expected = "size", SIZE_HELP

    def convert(self, value: object) -> object:
        try:
            return parse_byte_size(value)
        except ByteSizeError as exc:
            raise CoercionError(str(exc)) from None

    def render(self, value: object) -> str:
        return format_byte_size(int(value))  # type: ignore[call-overload]


class _Optional(ValueType):
    def __init__(self, inner: ValueType) -> None:
        self.inner = inner
        self.noun = inner.noun
        self.expected = inner.expected
        self.is_list = inner.is_list
        self.is_map = inner.is_map

    def convert(self, value: object) -> object:
        return None if value is None else self.inner.convert(value)

    def render(self, value: object) -> str:
        return "null" if value is None else self.inner.render(value)


def _json_or(value: object, want: tuple[str, ...], vt: ValueType) -> object:
    """If ``value`` is a string starting with one of ``want`` ("[" / "{"), parse it as JSON (Receptor's rule)."""
    if isinstance(value, str) and value.lstrip()[:1] in want:
        try:
            return json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise CoercionError(
                f"expected {vt.expected}; the string starts like JSON but is not valid JSON ({exc})"
            ) from None
    return value


class _List(ValueType):
    is_list = True

    def __init__(self, inner: ValueType) -> None:
        self.inner = inner
        self.noun = "list of " + _plural(inner.noun)
        self.expected = "a " + self.noun

    def convert(self, value: object) -> object:
        value = _json_or(value, ("[", "{") if self.inner.is_map else ("[",), self)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            if isinstance(value, dict) and not self.inner.is_map:
                raise self.mismatch(value)
            if isinstance(value, (set, frozenset, bytes, bytearray)) or value is None:
                raise self.mismatch(value)
            value = [value]  # a single scalar (or mapping, for a list of mappings) is a one-element list
        out = []
        for i, item in enumerate(value, 1):
            try:
                out.append(self.inner.convert(item))
            except CoercionError as exc:
                raise CoercionError(f"element {i}: {exc.message}") from None
        return out

    def render(self, value: object) -> str:
        return json.dumps(value) if value else "[]"


class _Dict(ValueType):
    is_map = True
    _keys = _Str()

    def __init__(self, inner: ValueType) -> None:
        self.inner = inner
        self.noun = "mapping of strings to " + _plural(inner.noun)
        self.expected = "a " + self.noun

    def convert(self, value: object) -> object:
        value = _json_or(value, ("{",), self)
        if not isinstance(value, dict):
            raise self.mismatch(value)
        out: dict[str, object] = {}
        for k, v in value.items():
            try:
                key = self._keys.convert(k)
            except CoercionError:
                raise CoercionError(f"mapping keys must be strings, got {describe_value(k)}") from None
            try:
                out[key] = self.inner.convert(v)  # type: ignore[index]
            except CoercionError as exc:
                raise CoercionError(f"value for {quote(key)}: {exc.message}") from None
        return out

    def render(self, value: object) -> str:
        return json.dumps(value) if value else "{}"


def _plural(noun: str) -> str:
    if noun.startswith(("list of", "mapping of")):
        return noun.replace("list of", "lists of", 1).replace("mapping of", "mappings of", 1)
    return noun + "s"


_SCALARS: dict[object, ValueType] = {str: _Str(), int: _Int(), float: _Float(), bool: _Bool(), Duration: _Duration(),
                                    ByteSize: _ByteSize()}


def _value_type(tp: object, where: str) -> ValueType:
    """Map a field's type hint to a :class:`ValueType`, or raise :class:`SchemaError` naming the field."""
    scalar = _SCALARS.get(tp)  # type: ignore[call-overload]
    if scalar is not None:
        return scalar
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _Optional(_value_type(rest[0], where))
    elif origin is list and len(args) == 1:
        return _List(_value_type(args[0], where))
    elif origin is dict and len(args) == 2 and args[0] is str:
        return _Dict(_value_type(args[1], where))
    raise SchemaError(
        f"{where}: unsupported type {tp!r}; use str, int, float, bool, Duration, ByteSize, X | None, list[X] or dict[str, X]"
    )


# --------------------------------------------------------------------------------------------------
# Keys and sections
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """One key of a section, derived from a schema dataclass field."""

    name: str  # the key as documented and shown in messages (metadata "key", else the field name)
    field: str  # the dataclass attribute
    type: ValueType
    required: bool
    default: object = _MISSING  # the default value, or ``dataclasses.MISSING``
    default_factory: Any = _MISSING  # the field's ``default_factory``, or ``dataclasses.MISSING``
    doc: str = ""

    def default_value(self) -> object:
        """The key's default (a fresh one from ``default_factory`` when the field has one)."""
        if self.default_factory is not _MISSING:
            return self.default_factory()
        if self.default is _MISSING:
            raise LookupError(f"key {self.name!r} is required and has no default")
        return self.default


@dataclass(frozen=True)
class _Compiled:
    keys: tuple[KeySpec, ...]
    by_norm: dict[str, KeySpec]


@functools.lru_cache(maxsize=None)
def _compile(schema: type) -> _Compiled:
    where = getattr(schema, "__qualname__", repr(schema))
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise SchemaError(f"{where}: a section schema must be a @dataclass class")
    try:
        hints = typing.get_type_hints(schema)
    except Exception as exc:  # unresolved forward references, typos in annotations
        raise SchemaError(f"{where}: cannot resolve its type hints ({exc}); define types at module level") from exc
    keys: list[KeySpec] = []
    by_norm: dict[str, KeySpec] = {}
    for f in dataclasses.fields(schema):
        if not f.init or f.name.startswith("_"):
            continue
        name = f.metadata.get("key", f.name)
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{where}.{f.name}: metadata 'key' must be a non-empty string")
        ks = KeySpec(
            name=name,
            field=f.name,
            type=_value_type(hints[f.name], f"{where}.{f.name}"),
            required=f.default is _MISSING and f.default_factory is _MISSING,
            default=f.default,
            default_factory=f.default_factory,
            doc=str(f.metadata.get("doc", "")),
        )
        keys.append(ks)
        for alias in {normalize_key(name), normalize_key(f.name)}:
            other = by_norm.get(alias)
            if other is not None and other is not ks:
                raise SchemaError(f"{where}: keys {other.name!r} and {name!r} both match {alias!r}; rename one")
            by_norm[alias] = ks
    return _Compiled(tuple(keys), by_norm)


@dataclass(frozen=True)
class SectionSpec:
    """A config section a plugin registers: its name, its schema dataclass and how it may appear.

    * ``name`` — lowercase section name, e.g. ``"tcp-listener"`` (matched case-insensitively in files).
    * ``schema`` — a ``@dataclass`` class; its fields are the section's keys.
    * ``singleton`` — at most one entry allowed (``node``, ``log-level``, ``work-signing``, ...).
    * ``bare`` — field that receives a scalar value: ``- log-level: debug``, ``- tcp-peer: host:2222``.
    * ``plural`` — the version-2 list key (default ``name + "s"``; see :attr:`plural_key`).
    * ``doc`` — one-line description; ``owner`` — the registering plugin (filled in by the registry).

    Construction checks the schema and raises :class:`~mesh.config.errors.SchemaError` for plugin bugs.
    """

    name: str
    schema: type
    singleton: bool = False
    bare: str | None = None
    plural: str | None = None
    doc: str = ""
    owner: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SECTION_NAME.match(self.name):
            raise SchemaError(f"section name {self.name!r}: use lowercase letters, digits and '-' (e.g. 'tcp-listener')")
        if self.plural is not None and not _SECTION_NAME.match(str(self.plural)):
            raise SchemaError(f"section {self.name!r}: plural {self.plural!r} must be lowercase letters, digits and '-'")
        compiled = _compile(self.schema)
        if self.bare is not None and normalize_key(str(self.bare)) not in compiled.by_norm:
            raise SchemaError(f"section {self.name!r}: bare field {self.bare!r} is not a field of {self.schema.__qualname__}")

    @property
    def plural_key(self) -> str:
        """The version-2 list key: ``plural`` or ``name + "s"``."""
        return self.plural or self.name + "s"

    @property
    def keys(self) -> tuple[KeySpec, ...]:
        """The section's keys in field order."""
        return _compile(self.schema).keys

    @property
    def bare_key(self) -> KeySpec | None:
        """The key that receives a scalar value, if any."""
        return None if self.bare is None else _compile(self.schema).by_norm[normalize_key(self.bare)]

    def known_keys(self) -> str:
        """``"(known: a, b, c)"`` for error messages."""
        names = sorted(k.name for k in self.keys)
        return f"(known: {', '.join(names)})" if names else "(this section takes no keys)"

    def build(self, params: object) -> object:
        """Coerce one entry's params (a mapping, a bare scalar, or ``None``) into a schema instance.

        Raises :class:`SectionValueError` naming the offending key (as written) for every user error,
        including those raised by the schema's ``__post_init__``/``validate()``.
        """
        compiled = _compile(self.schema)
        given: dict[object, object]
        if params is None:
            given = {}
        elif isinstance(params, dict):
            given = params
        else:
            bare = self.bare_key
            if bare is None or (isinstance(params, (list, tuple)) and not bare.type.is_list):
                what = "a list" if isinstance(params, (list, tuple)) else describe_value(params)
                hint = "; write the keys without a leading '-'" if isinstance(params, (list, tuple)) else ""
                raise SectionValueError(None, f"expected a mapping of keys, got {what}{hint} {self.known_keys()}")
            given = {bare.name: params}

        kwargs: dict[str, object] = {}
        written: dict[str, str] = {}
        for raw_key, value in given.items():
            key = _key_text(raw_key)
            ks = compiled.by_norm.get(normalize_key(key))
            if ks is None:
                raise SectionValueError(key, _unknown_key_message(key, compiled))
            if ks.field in written:
                raise SectionValueError(key, f"given twice (also as {quote(written[ks.field])}); keep one")
            written[ks.field] = key
            if value is None and not isinstance(ks.type, _Optional):
                if not ks.required:
                    continue  # `key:` with nothing after it means "use the default"
                raise SectionValueError(key, f"expected {ks.type.expected}, got null")
            try:
                kwargs[ks.field] = ks.type.convert(value)
            except CoercionError as exc:
                raise SectionValueError(key, exc.message) from None

        for ks in compiled.keys:
            if ks.required and ks.field not in kwargs:
                raise SectionValueError(ks.name, f"missing required key {quote(ks.name)} ({ks.type.noun})", key_in_message=True)

        try:
            instance = self.schema(**kwargs)
            validate = getattr(instance, "validate", None)
            if callable(validate):
                validate()
        except SectionValueError:
            raise
        except ValueError as exc:  # a __post_init__/validate that used a plain ValueError
            raise SectionValueError(None, str(exc) or type(exc).__name__) from None
        return instance


def section_keys(spec: SectionSpec) -> tuple[KeySpec, ...]:
    """The keys of a section (for docs generation and introspection)."""
    return spec.keys


def _key_text(raw: object) -> str:
    """A mapping key as the user wrote it (YAML may have read ``1234:`` as an int or ``on:`` as a bool)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (SourceInt, SourceFloat)):
        return raw.text
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _unknown_key_message(key: str, compiled: _Compiled) -> str:
    names = sorted(k.name for k in compiled.keys)
    if not names:
        return "unknown key; this section takes no keys"
    by_norm_name = {normalize_key(k.name): k.name for k in compiled.keys}
    match = get_close_matches(normalize_key(key), list(by_norm_name), n=1)
    suggestion = f"; did you mean {quote(by_norm_name[match[0]])}?" if match else ""
    return f"unknown key{suggestion} (known: {', '.join(names)})"
