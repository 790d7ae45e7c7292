"""Typed configuration errors.

Three audiences, three types:

* :class:`ConfigError` — the user's config file is wrong. ``str()`` is one line that names the file, where
  in it the problem is (line, section, item, key) and what to write instead, e.g.
  ``config.yml: tcp-listener (item 3): key 'port': expected an integer, got 'abc'``.
* :class:`SectionValueError` — raised by a section schema's ``validate()`` (or by value coercion) to reject
  one key's value; the loader turns it into a :class:`ConfigError` that names the file, section and item.
* :class:`SchemaError` — a plugin registered an unusable :class:`~mesh.config.schema.SectionSpec`
  (unsupported field type, bad name, ...). This is a plugin bug, not a user error.
"""

from __future__ import annotations

__all__ = ["ConfigError", "SectionValueError", "SchemaError", "one_line"]


def one_line(text: str) -> str:
    """Collapse whitespace runs containing newlines so messages always fit on one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class ConfigError(Exception):
    """A user-caused problem in a configuration file.

    Attributes (all but ``message`` may be ``None``):

    * ``file`` — the file name as given (or ``"<string>"`` for text), ``section`` — canonical section name,
    * ``index`` — 1-based item number: the position in the list (v1) or in the section's list (v2),
    * ``key`` — the key as written in the file, ``line``/``column`` — 1-based position for YAML-level errors,
    * ``message`` — what is wrong and what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        section: str | None = None,
        index: int | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key_in_message: bool = False,
    ) -> None:
        self.message = one_line(message)
        self.file = file
        self.section = section
        self.index = index
        self.key = key
        self.line = line
        self.column = column
        # When the message already names the key ("missing required key 'port'"), don't repeat it.
        self.key_in_message = key_in_message
        super().__init__(str(self))

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(self.file)
        if self.line is not None:
            parts.append(f"line {self.line}" + (f", column {self.column}" if self.column is not None else ""))
        if self.section:
            parts.append(self.section + (f" (item {self.index})" if self.index is not None else ""))
        elif self.index is not None:
            parts.append(f"item {self.index}")
        if self.key is not None and not self.key_in_message:
            parts.append(f"key {quote(self.key)}")
        parts.append(self.message)
        return ": ".join(parts)

    def __reduce__(self):  # keep pickling/copying working with keyword-only arguments
        return (_rebuild, (self.message, self.__dict__.copy()))


def _rebuild(message: str, state: dict) -> ConfigError:
    err = ConfigError.__new__(ConfigError)
    err.__dict__.update(state)
    Exception.__init__(err, str(err))
    return err


class SectionValueError(ValueError):
    """One key of a section has an unacceptable value.

    Raise it from a schema's ``validate(self)`` method: ``raise SectionValueError("cost", "must be > 0")``.
    ``key`` is the key name (or ``None`` for a whole-section problem); ``message`` says what to fix.
    """

    def __init__(self, key: str | None, message: str, *, key_in_message: bool = False) -> None:
        self.key = key
        self.message = one_line(message)
        self.key_in_message = key_in_message
        super().__init__(f"{key}: {self.message}" if key and not key_in_message else self.message)


class SchemaError(TypeError):
    """A plugin declared a section schema the config layer cannot load (a plugin bug, not a user error)."""


def quote(text: object) -> str:
    """Render user text in single quotes on one line (escapes newlines and control characters)."""
    r = repr(str(text))
    if r.startswith('"'):  # repr chose double quotes because the text contains a single quote
        r = "'" + r[1:-1].replace("\\'", "'").replace("'", "\\'").replace('\\"', '"') + "'"
    return r
