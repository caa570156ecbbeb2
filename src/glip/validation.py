"""Reading the files users give (JSON, YAML) and checking their fields, with one-line errors.

Every reader of a user's file goes through this module, so that every malformed file ends in the
same kind of message: the file, the path to the bad field, what was expected and what was found::

    /data/val.json: annotations[12].bbox: expected [x, y, width, height] (4 finite numbers), got "abc"
    recipe.yaml: optim.lr: expected a number, got "fast"

* :func:`read_json` / :func:`read_yaml` read a file safely: a missing file, a folder, an unreadable
  file, bytes that are not UTF-8, a syntax error, nesting too deep for the parser and (optionally)
  a top level that is not an object all become the caller's error class, never a traceback.
* :class:`Fields` checks single values (objects, lists, integers, finite numbers, strings, ids,
  boxes) and raises with ``<file>: <path>: <problem>``.
* :func:`build_dataclass` turns a parsed mapping into a typed dataclass tree (the GLIP model config
  and the training recipe): each value is checked against its field's annotation, unknown keys are
  rejected with the closest valid key, missing required keys are named.

This module depends only on :mod:`glip.errors`, so the lowest layers (``glip.config``) can use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from glip.errors import ConfigError, DataError, GLIPError

_T = TypeVar("_T")
ErrorType = type[GLIPError]
MAX_PIXELS = 1e9  # a box coordinate beyond this is not a pixel position (and overflows float32 maths)


# ------------------------------------------------------------------------------------ messages
def one_line(text: str) -> str:
    """``text`` with every line break (and the blanks around it) folded into one space."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def show(value: Any, limit: int = 80) -> str:
    """A short one-line rendering of a parsed value for an error message (JSON style, cut at ``limit``)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def closest(name: Any, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the option closest to ``name``, or ``""`` when none is close.

    Close: similar spelling (``difflib``), or an abbreviation by initials (``learning_rate`` → ``lr``).
    """
    name, choices = str(name), sorted(str(o) for o in options)
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not match:
        match = [o for o in choices if _initials(name) == o or _initials(o) == name]
    if not match:
        match = difflib.get_close_matches(name, choices, n=1, cutoff=0.45)
    return f"; did you mean {match[0]!r}?" if match else ""


def _initials(name: str) -> str:
    words = [w for w in re.split(r"[_.\-\s]+", name) if w]
    return "".join(w[0] for w in words) if len(words) > 1 else ""


def join_path(parent: str, key: str | int) -> str:
    """``parent.key`` or ``parent[index]`` (``key`` alone when ``parent`` is empty)."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


# ------------------------------------------------------------------------------------ reading
def read_text(path: str | Path, what: str, error: ErrorType = DataError) -> str:
    """The UTF-8 text of a user's file (a leading byte-order mark is dropped).

    Args:
        path: the file.
        what: what the file is, for messages (``"annotation file"``, ``"training recipe"``).
        error: the error class raised.

    Raises:
        error: if the file is missing, a folder, unreadable, or not UTF-8.
    """
    p = Path(path)
    if not p.exists():
        raise error(f"{what} {p} does not exist")
    if p.is_dir():
        raise error(f"{what} {p} is a folder, not a file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise error(one_line(f"cannot read {what} {p}: {e.strerror or e}")) from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(
            f"{what} {p} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): save it as UTF-8"
        ) from e


def parse_json(text: str, source: str, what: str = "file", error: ErrorType = DataError) -> Any:
    """Parse JSON text; syntax errors, numbers too long and nesting too deep become ``error``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{what} {source} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    except RecursionError as e:
        raise error(f"{what} {source} is nested too deeply to be read (is it really a {what}?)") from e
    except ValueError as e:  # e.g. an integer with more than 4300 digits
        raise error(one_line(f"{what} {source} is not valid JSON ({e})")) from e


def read_json(path: str | Path, what: str = "file", error: ErrorType = DataError, *, mapping: bool = False) -> Any:
    """Read a user's JSON file.

    Args:
        path: the file.
        what: what the file is, for messages.
        error: the error class raised.
        mapping: require a JSON object at the top level.

    Raises:
        error: if the file is missing, unreadable, not UTF-8, not JSON, nested too deeply, or (with
            ``mapping``) not an object.
    """
    data = parse_json(read_text(path, what, error), str(path), what, error)
    if mapping and not isinstance(data, dict):
        raise error(f"{what} {path} must hold a JSON object ({{...}}), got {_kind(data)}")
    return data


def parse_yaml(text: str, source: str, what: str = "file", error: ErrorType = ConfigError) -> Any:
    """Parse YAML text with ``yaml.safe_load`` (nothing is evaluated); every failure becomes ``error``."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = e.problem or e.context or "syntax error"
        raise error(one_line(f"{what} {source} is not valid YAML ({where}{problem})")) from e
    except yaml.YAMLError as e:
        raise error(one_line(f"{what} {source} is not valid YAML ({e})")) from e
    except RecursionError as e:
        raise error(f"{what} {source} is nested too deeply to be read") from e
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a date like 2024-13-45
        raise error(one_line(f"{what} {source} has a value YAML cannot read ({e})")) from e


def read_yaml(path: str | Path, what: str = "file", error: ErrorType = ConfigError, *, mapping: bool = False) -> Any:
    """Read a user's YAML file (see :func:`read_json`); an empty file reads as ``{}`` with ``mapping``."""
    data = parse_yaml(read_text(path, what, error), str(path), what, error)
    if mapping:
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise error(f"{what} {path} must be a mapping of keys to values, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    if type(value) in names:
        return f"{names[type(value)]} {show(value, 40)}" if isinstance(value, str) else names[type(value)]
    return f"a number {show(value, 40)}" if isinstance(value, (int, float)) else f"a {type(value).__name__}"


# ------------------------------------------------------------------------------------ field checks
def is_int(value: Any) -> bool:
    """An integer that is not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_box(value: Any) -> bool:
    """``[x, y, width, height]``: a list of 4 finite numbers within :data:`MAX_PIXELS` (a fast check:
    it runs once per box of large datasets)."""
    if type(value) not in (list, tuple) or len(value) != 4:
        return False
    x, y, w, h = value
    return (
        type(x) in _NUMBERS
        and type(y) in _NUMBERS
        and type(w) in _NUMBERS
        and type(h) in _NUMBERS
        and -MAX_PIXELS <= x <= MAX_PIXELS  # false for NaN
        and -MAX_PIXELS <= y <= MAX_PIXELS
        and -MAX_PIXELS <= w <= MAX_PIXELS
        and -MAX_PIXELS <= h <= MAX_PIXELS
    )


_NUMBERS = (int, float)


class Fields:
    """Checks of single values of one file; failures raise ``error("<source>: <path>: <problem>")``.

    Args:
        source: the file (or ``"<memory>"``) named in every message; empty: messages start at the path.
        error: the error class (:class:`DataError` for data, :class:`ConfigError` for configs).
    """

    def __init__(self, source: str | Path, error: ErrorType = DataError) -> None:
        self.source = str(source)
        self.error = error

    def fail(self, where: str, problem: str) -> NoReturn:
        """Raise ``error`` for the field at ``where`` (a path such as ``annotations[3].bbox``)."""
        parts = [part for part in (self.source, where) if part]
        raise self.error(one_line(": ".join([*parts, problem])))

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        """``value`` if it is a JSON object."""
        if not isinstance(value, dict):
            self.fail(where, f"expected an object ({{...}}), got {show(value)}")
        return value

    def array(self, value: Any, where: str) -> list[Any]:
        """``value`` if it is a list."""
        if not isinstance(value, list):
            self.fail(where, f"expected a list ([...]), got {show(value)}")
        return value

    def require(self, record: Mapping[str, Any], keys: Sequence[str], where: str, what: str = "record") -> None:
        """Fail on the first of ``keys`` missing from ``record`` (``what`` names the kind of record)."""
        for key in keys:
            if key not in record:
                self.fail(join_path(where, key), f"missing (every {what} needs {', '.join(keys)})")

    def integer(self, value: Any, where: str, minimum: int | None = None) -> int:
        """An integer (not a boolean, not a float), at least ``minimum``."""
        if not is_int(value):
            self.fail(where, f"expected an integer, got {show(value)}")
        if minimum is not None and value < minimum:
            self.fail(where, f"must be at least {minimum}, got {value}")
        return int(value)

    def number(self, value: Any, where: str, *, positive: bool = False, minimum: float | None = None) -> float:
        """A finite number (int or float, not a boolean), optionally > 0 or >= ``minimum``."""
        if not is_number(value):
            self.fail(where, f"expected a finite number, got {show(value)}")
        if positive and value <= 0:
            self.fail(where, f"must be positive, got {value}")
        if minimum is not None and value < minimum:
            self.fail(where, f"must be at least {minimum}, got {value}")
        return float(value)

    def size(self, value: Any, where: str) -> float:
        """An image width or height: a positive number of pixels (at most :data:`MAX_PIXELS`)."""
        size = self.number(value, where, positive=True)
        if size > MAX_PIXELS:
            self.fail(where, f"must be a number of pixels (at most {MAX_PIXELS:.0e}), got {show(value)}")
        return size

    def string(self, value: Any, where: str, *, blank: bool = False) -> str:
        """A string, not blank unless ``blank``."""
        if not isinstance(value, str):
            self.fail(where, f"expected a string, got {show(value)}")
        if not blank and not value.strip():
            self.fail(where, f"must not be empty, got {show(value)}")
        return value

    def ident(self, value: Any, where: str, *, strings: bool = True) -> int | str:
        """A record id: an integer, or (with ``strings``) a string."""
        if is_int(value) or (strings and isinstance(value, str)):
            return value
        kind = "an integer or a string" if strings else "an integer"
        self.fail(where, f"expected {kind} id, got {show(value)}")

    def flag(self, value: Any, where: str) -> bool:
        """A 0/1 or true/false flag (``iscrowd``)."""
        if value not in (0, 1) or not isinstance(value, (int, bool)):
            self.fail(where, f"expected 0 or 1, got {show(value)}")
        return bool(value)

    def box_xywh(self, value: Any, where: str) -> tuple[float, float, float, float]:
        """``[x, y, width, height]``: 4 finite numbers (sizes may be <= 0: callers decide to skip)."""
        if is_box(value):
            x, y, w, h = value
            return float(x), float(y), float(w), float(h)
        if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(is_number(v) for v in value)):
            self.fail(where, f"expected [x, y, width, height] (4 finite numbers), got {show(value)}")
        if any(abs(v) > MAX_PIXELS for v in value):
            self.fail(where, f"coordinates must be pixels (at most {MAX_PIXELS:.0e} in size), got {show(value)}")
        x, y, w, h = (float(v) for v in value)
        return x, y, w, h

    def unique(self, value: Any, seen: dict[Any, str], where: str) -> None:
        """Fail if ``value`` was seen before (``seen`` maps values to where they were first seen)."""
        if value in seen:
            self.fail(where, f"duplicate id {show(value)} (already used by {seen[value]}): ids must be unique")
        seen[value] = where


# ------------------------------------------------------------------------------------ dataclasses
def build_dataclass(cls: type[_T], data: Any, fields: Fields, where: str = "") -> _T:
    """Build the dataclass ``cls`` from a parsed mapping, checking every value against its annotation.

    Nested dataclass fields take mappings; ``list[T]``, ``tuple[T, ...]``, fixed tuples,
    ``dict[str, T]``, ``X | None``, ``int``, ``float``, ``bool``, ``str`` and ``Any`` are understood.
    Numbers must be finite; a string that YAML 1.1 left unparsed (``"2e-4"``) is read as a number
    where a number is expected; an integer is accepted where a float is expected. Keys missing from
    ``data`` keep their defaults.

    Raises:
        GLIPError: ``fields.error`` naming the path of the first bad value (``optim.lr: expected a
            number, got "fast"``), an unknown key (with the closest valid one) or a missing required key.
    """
    data = fields.mapping(data, where or "top level")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            options = ", ".join(sorted(known))
            fields.fail(join_path(where, str(key)), f"unknown key{closest(key, known)} (known keys: {options})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(value, hints[name], fields, join_path(where, name)) for name, value in data.items()}
    for name, f in known.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in kwargs and no_default and f.init:
            fields.fail(join_path(where, name), "missing (required)")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, fields: Fields, where: str) -> Any:
    """``value`` checked against (and converted to) the type annotation ``hint``; see :func:`build_dataclass`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return coerce(value, options[0], fields, where)
        for option in options:  # first that fits
            try:
                return coerce(value, option, fields, where)
            except GLIPError:
                continue
        fields.fail(where, f"expected {_describe(hint)}, got {show(value)}")
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, fields, where)  # type: ignore[arg-type]
    if origin is list:
        items = _sequence(value, hint, fields, where)
        return [coerce(v, args[0] if args else Any, fields, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is tuple:
        items = _sequence(value, hint, fields, where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], fields, f"{where}[{i}]") for i, v in enumerate(items))
        if args and len(items) != len(args):
            fields.fail(where, f"expected {len(args)} values, got {len(items)}: {show(value)}")
        return tuple(coerce(v, a, fields, f"{where}[{i}]") for i, (v, a) in enumerate(zip(items, args, strict=False)))
    if origin is dict:
        mapping = fields.mapping(value, where)
        value_hint = args[1] if len(args) == 2 else Any
        out = {}
        for key, item in mapping.items():
            if not isinstance(key, (str, int, float)) or isinstance(key, bool):
                fields.fail(where, f"keys must be names, got {show(key)}")
            out[str(key)] = coerce(item, value_hint, fields, join_path(where, str(key)))
        return out
    return _scalar(value, hint, fields, where)


def _sequence(value: Any, hint: Any, fields: Fields, where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        fields.fail(where, f"expected {_describe(hint)}, got {show(value)}")
    return list(value)


def _scalar(value: Any, hint: Any, fields: Fields, where: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            fields.fail(where, f"expected true or false, got {show(value)}")
        return value
    if hint is int:
        number = _as_number(value)
        if number is None or not float(number).is_integer():
            fields.fail(where, f"expected an integer, got {show(value)}")
        return int(number)
    if hint is float:
        number = _as_number(value)
        if number is None:
            fields.fail(where, f"expected a number, got {show(value)}")
        return float(number)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            fields.fail(where, f"expected a string, got {show(value)}")
        return str(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        fields.fail(where, f"expected {_describe(hint)}, got {show(value)}")
    return value


def _as_number(value: Any) -> int | float | None:
    """A finite int or float; strings such as ``"2e-4"`` (which YAML 1.1 leaves unparsed) are parsed."""
    if isinstance(value, str):
        try:
            value = float(value) if not re.fullmatch(r"[+-]?\d+", value.strip()) else int(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} values"
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        item = args[0] if args else Any
        return f"a list of {plural.get(item, 'mappings' if dataclasses.is_dataclass(item) else 'values')}"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


__all__ = [
    "Fields",
    "build_dataclass",
    "closest",
    "coerce",
    "is_box",
    "is_int",
    "is_number",
    "join_path",
    "one_line",
    "parse_json",
    "parse_yaml",
    "read_json",
    "read_text",
    "read_yaml",
    "show",
]
