"""Load Receptor YAML config files into typed section entries.

Two file shapes are accepted:

* **v1** (what ``receptor --config`` parses): a YAML list; each item is a bare section name
  (``- local-only``) or a one-key mapping ``{section: params}`` where params is a mapping, a scalar (the
  section's bare key) or null.
* **v2**: a mapping with ``version: 2`` whose keys are section names, singular (``node: {...}``,
  ``log-level: debug``) or plural (``tcp-listeners: [{...}, {...}]``).

Every user mistake — YAML syntax, duplicate keys, unknown sections or keys, bad values, a repeated
singleton — raises :class:`~mesh.config.errors.ConfigError` with a one-line message naming the file and the
place; nothing user-caused escapes as another exception.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches

from .errors import ConfigError, SchemaError, SectionValueError, quote
from .raw import RawConfig, name_text, read_config, read_config_text
from .schema import SectionSpec, describe_value, normalize_key, normalize_section

__all__ = ["ConfigEntry", "LoadedConfig", "RawConfig", "SectionSpecs", "build_config", "config_digest",
           "load_config", "parse_config", "read_config", "read_config_text"]

@dataclass
class ConfigEntry:
    """One section entry of a config file."""

    section: str  # canonical lowercase section name
    index: int  # 1-based position in the file (v1) or running count of entries (v2)
    values: object  # an instance of the section's schema dataclass
    raw: object  # the raw YAML params (for reload comparison; see config_digest)


@dataclass
class LoadedConfig:
    """A parsed config file: its entries in file order."""

    #: The file it was read from, as given (None for text).
    path: str | None
    entries: list[ConfigEntry]
    specs: Mapping[str, SectionSpec] = field(default_factory=dict, repr=False, compare=False)

    def of(self, section: str) -> list[object]:
        """The values of every entry of ``section`` (any case), in file order.

        Raises ``KeyError`` when the section was not among the specs the file was loaded with (a typo in code).
        """
        name = self._known(section)
        return [e.values for e in self.entries if e.section == name]

    def one(self, section: str) -> object | None:
        """The value of a singleton section, or ``None`` when the file does not contain it.

        Raises ``ValueError`` when ``section`` is not a singleton (use :meth:`of`).
        """
        name = self._known(section)
        spec = self._spec(name)
        values = [e.values for e in self.entries if e.section == name]
        if (spec is not None and not spec.singleton) or len(values) > 1:
            raise ValueError(f"section {name!r} is not a singleton; use .of({name!r})")
        return values[0] if values else None

    def _spec(self, name: str) -> SectionSpec | None:
        for spec in self.specs.values():
            if spec.name == name:
                return spec
        return None

    def _known(self, section: str) -> str:
        name = normalize_section(section)
        if self.specs and self._spec(name) is None:
            raise KeyError(f"no config section {name!r} is registered")
        return name


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


class SectionSpecs(dict[str, SectionSpec]):
    """Section specs by name, which can also say why a name is not among them.

    :meth:`mesh.plugins.PluginHost.section_specs` returns one: a section of an installed plugin that
    ``MESH_DISABLE_PLUGINS`` leaves out is reported as that, not as a misspelling.
    """

    def __init__(self, specs: Mapping[str, SectionSpec] | None = None, *,
                 explain: Callable[[str], str | None] | None = None) -> None:
        super().__init__(specs or {})
        self._explain = explain

    def explain_missing(self, name: str) -> str | None:
        """Why section ``name`` (canonical) is missing, as a whole error message, or None."""
        return self._explain(name) if self._explain is not None else None


class _Sections:
    """Section lookup by singular and plural names."""

    def __init__(self, specs: Mapping[str, SectionSpec]) -> None:
        self.explain = specs.explain_missing if isinstance(specs, SectionSpecs) else None
        self.singular: dict[str, SectionSpec] = {}
        self.plural: dict[str, SectionSpec] = {}
        for spec in specs.values():
            if not isinstance(spec, SectionSpec):
                raise SchemaError(f"config specs must be SectionSpec instances, got {spec!r}")
            if spec.name in self.singular:
                raise SchemaError(f"config section {spec.name!r} is registered twice")
            self.singular[spec.name] = spec
        for spec in specs.values():
            # A singular name wins over another section's plural.
            self.plural.setdefault(normalize_section(spec.plural_key), spec)

    def unknown(self, name: str, source: str, *, v2: bool) -> ConfigError:
        reason = self.explain(normalize_section(name)) if self.explain is not None else None
        if reason is not None:
            return ConfigError(reason, file=source)
        candidates = set(self.singular) | (set(self.plural) if v2 else set())
        match = get_close_matches(normalize_section(name), sorted(candidates), n=1)
        if match:
            return ConfigError(f"unknown section {quote(name)}; did you mean {quote(match[0])}?", file=source)
        known = ", ".join(sorted(self.singular)) or "none are registered"
        return ConfigError(f"unknown section {quote(name)} (known: {known})", file=source)


class _Builder:
    """Accumulates entries, enforcing singletons and turning value errors into ConfigErrors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.entries: list[ConfigEntry] = []
        self.first_at: dict[str, int | None] = {}

    def add(self, spec: SectionSpec, params: object, *, index: int | None, entry_index: int) -> None:
        if spec.singleton and spec.name in self.first_at:
            first = self.first_at[spec.name]
            where = f" (first at item {first})" if first is not None else ""
            raise ConfigError(
                f"section {quote(spec.name)} may appear only once{where}; merge the entries",
                file=self.source,
                section=spec.name,
                index=index,
            )
        try:
            values = spec.build(params)
        except SectionValueError as exc:
            raise ConfigError(
                exc.message,
                file=self.source,
                section=spec.name,
                index=index,
                key=exc.key,
                key_in_message=exc.key_in_message,
            ) from None
        self.first_at.setdefault(spec.name, index)
        self.entries.append(ConfigEntry(spec.name, entry_index, values, params))


def _parse_v1(data: list, sections: _Sections, source: str, partial: bool = False) -> list[ConfigEntry]:
    builder = _Builder(source)
    for i, item in enumerate(data, 1):
        if isinstance(item, dict):
            if len(item) != 1:
                names = [name_text(k) for k in item]
                if not names:
                    hint = "found an empty mapping; write '- section-name' or '- section-name: {key: value}'"
                else:
                    listed = ", ".join(quote(n) for n in names)
                    hint = f"found {len(names)} ({listed}); "
                    if all(normalize_section(n) in sections.singular for n in names):
                        hint += "start each section with its own '- '"
                    else:
                        hint += f"indent the keys further than the section name {quote(names[0])}"
                raise ConfigError(f"each list item must have exactly one section name, {hint}", file=source, index=i)
            raw_name, params = next(iter(item.items()))
        elif isinstance(item, str):
            raw_name, params = item, None
        else:
            raise ConfigError(
                f"each list item must be a section name or a mapping '- section: {{key: value}}', got {describe_value(item)}",
                file=source,
                index=i,
            )
        name = name_text(raw_name)
        spec = sections.singular.get(normalize_section(name))
        if spec is None:
            if partial:
                continue
            raise sections.unknown(name, source, v2=False)
        builder.add(spec, params, index=i, entry_index=i)
    return builder.entries


def _parse_v2(data: dict, sections: _Sections, source: str, partial: bool = False) -> list[ConfigEntry]:
    version_keys = [k for k in data if isinstance(k, str) and normalize_key(k) == "version"]
    if not version_keys:
        raise ConfigError(
            "a mapping config needs `version: 2`; or use the list format (- section: {key: value})", file=source
        )
    version = data[version_keys[0]]
    if isinstance(version, bool) or version not in (2, "2"):
        raise ConfigError(
            f"unsupported config version {describe_value(version)}; write `version: 2`, or use the list format",
            file=source,
        )
    builder = _Builder(source)
    count = 0
    for raw_name, value in data.items():
        if raw_name in version_keys:
            continue
        name = name_text(raw_name)
        norm = normalize_section(name)
        spec = sections.singular.get(norm) or sections.plural.get(norm)
        if spec is None:
            if partial:
                continue
            raise sections.unknown(name, source, v2=True)
        is_list_key = norm == normalize_section(spec.plural_key)
        if is_list_key and value is None:
            continue  # `tcp-listeners:` with nothing under it
        if is_list_key and isinstance(value, list):
            items: list[tuple[int | None, object]] = list(enumerate(value, 1))
        else:
            items = [(None, value)]
        for index, params in items:
            count += 1
            builder.add(spec, params, index=index, entry_index=count)
    return builder.entries


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def build_config(raw: RawConfig, specs: Mapping[str, SectionSpec], *, partial: bool = False) -> LoadedConfig:
    """Check the sections of ``raw`` against ``specs``.

    With ``partial``, sections that ``specs`` does not know are skipped instead of refused (a
    node's early start reads its ``node`` and ``control-service`` sections this way).

    Raises :class:`ConfigError` for every problem in the sections it checks.
    """
    sections = _Sections(specs)
    data, source = raw.data, raw.source
    if data is None:
        entries: list[ConfigEntry] = []
    elif isinstance(data, list):
        entries = _parse_v1(data, sections, source, partial)
    elif isinstance(data, dict):
        entries = _parse_v2(data, sections, source, partial)
    else:
        raise ConfigError(
            f"the top level must be a list of sections (or a mapping with `version: 2`), got {describe_value(data)}",
            file=source,
        )
    return LoadedConfig(path=raw.path, entries=entries, specs=specs)


def parse_config(text: str, specs: Mapping[str, SectionSpec], *, source: str = "<string>") -> LoadedConfig:
    """Parse config text (v1 list or v2 mapping) against ``specs``; ``source`` names it in errors.

    Raises :class:`ConfigError` for every problem in the text.
    """
    return build_config(read_config_text(text, source=source), specs)


def load_config(path: str | os.PathLike[str], specs: Mapping[str, SectionSpec]) -> LoadedConfig:
    """Read and parse a config file; errors name the file as given.

    Raises :class:`ConfigError` when the file cannot be read or decoded, or its content is invalid.
    """
    return build_config(read_config(path), specs)


def config_digest(entry: ConfigEntry) -> str:
    """Canonical text of an entry's raw params (sorted JSON, keys normalised) for reload comparisons.

    Two entries with the same digest were written equivalently (key case, ``-``/``_`` and key order aside).
    A bare value (``- tcp-listener: 2222``) and its mapping form (``{port: 2222}``) digest differently, as
    Receptor's reload comparison of re-serialised YAML does.
    """
    raw = entry.raw
    if isinstance(raw, dict):
        raw = {normalize_key(name_text(k)): v for k, v in raw.items()}
    return json.dumps(
        {"section": entry.section, "params": _canonical(raw)}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def _canonical(value: object) -> object:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if value == value and abs(value) != float("inf") else repr(float(value))
    if isinstance(value, dict):
        return {name_text(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return repr(value)
