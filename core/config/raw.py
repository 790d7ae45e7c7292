"""A config file read as YAML, before its sections are checked against their schemas.

What a node's early start needs of its config (:mod:`mesh.control.early`), so it imports
neither the section schemas (dataclasses) nor, for a file unchanged since it was last parsed,
PyYAML (:mod:`mesh.config.cache`).
"""

from __future__ import annotations

import os

from .errors import ConfigError
from .scalars import SourceFloat, SourceInt, normalize_key, normalize_section


def name_text(raw: object) -> str:
    """A section name or key as written (numbers keep their source text)."""
    if isinstance(raw, (SourceInt, SourceFloat)):
        return raw.text
    if isinstance(raw, str):
        return raw
    from .schema import describe_value

    return describe_value(raw)


class RawConfig:
    """A config file read and parsed as YAML, before its sections are checked."""

    def __init__(self, data: object, source: str, path: str | None = None) -> None:
        #: The YAML document.
        self.data = data
        #: What errors call the file.
        self.source = source
        #: The file it was read from, as given (None for text).
        self.path = path

    def section_names(self) -> set[str]:
        """The section names the file uses, normalised (version-2 keys may be plural)."""
        if isinstance(self.data, list):
            items = [next(iter(item)) if isinstance(item, dict) and len(item) == 1 else item
                     for item in self.data]
        elif isinstance(self.data, dict):
            items = [k for k in self.data if not (isinstance(k, str) and normalize_key(k) == "version")]
        else:
            return set()
        return {normalize_section(name_text(item)) for item in items
                if isinstance(item, (str, SourceInt, SourceFloat))}


def read_config_text(text: str, *, source: str = "<string>") -> RawConfig:
    """Parse config text as YAML; raises :class:`ConfigError` for YAML problems."""
    from .yaml_reader import read_yaml  # PyYAML only when a file is really parsed

    return RawConfig(read_yaml(text, source), source)


def read_config(path: str | os.PathLike[str]) -> RawConfig:
    """Read a config file and parse it as YAML; errors name the file as given.

    A file unchanged since it was last parsed comes from the config cache
    (:mod:`mesh.config.cache`), without PyYAML.

    Raises :class:`ConfigError` when the file cannot be read or decoded, or is not valid YAML.
    """
    from . import cache

    source = str(path)
    cached = cache.lookup(source)
    if cached.hit:
        return RawConfig(cached.data, source, source)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=source) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8",
            file=source,
        ) from None
    raw = read_config_text(text, source=source)
    raw.path = source
    cached.store(raw.data)
    return raw
