"""Small, dependency-free validation for the YAML config.

A ``Reader`` walks one mapping of the parsed YAML, hands out typed values, remembers which
keys it consumed and, at ``finish()``, rejects any key it did not (with a did-you-mean).
Every error is a ``ConfigError`` naming the key path, the problem and the fix, so the CLI
can print one line and exit 2 instead of a traceback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(key, problem, fix)
        self.key = key
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        return f"{where}{self.problem}. Fix: {self.fix}"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3,
}
DURATION_FIX = "write a number with a unit, like 500ms, 5s, 1m, 2h or 7d"


def parse_duration(value: object, key: str) -> float:
    """'500ms' / '5s' / '1m' / '2h' / '7d' -> seconds. A bare number is refused: units matter."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ConfigError(key, f"{value!r} is not a duration", DURATION_FIX)
    match = _DURATION_RE.match(value)
    if not match:
        raise ConfigError(key, f"{value!r} is not a duration", DURATION_FIX)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: object, key: str) -> int:
    """'64MB' / '512KiB' / 1048576 -> bytes."""
    fix = "write a byte count like 1048576, 512KiB, 64MB or 1GiB"
    if isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a size", fix)
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(key, f"{value} is negative", fix)
        return value
    if not isinstance(value, str) or not (match := _SIZE_RE.match(value)):
        raise ConfigError(key, f"{value!r} is not a size", fix)
    unit = (match.group(2) or "b").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _type_name(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def join_key(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Reader:
    """Typed access to one mapping of the config, with unknown-key detection."""

    def __init__(self, data: object, path: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.fail_at(path, f"must be a mapping, got {_type_name(data)}",
                         "write it as `key: value` lines indented under it")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    # -- errors ----------------------------------------------------------------------
    @staticmethod
    def fail_at(key: str, problem: str, fix: str) -> NoReturn:
        raise ConfigError(key, problem, fix)

    def key(self, name: str) -> str:
        return join_key(self.path, name)

    def fail(self, name: str, problem: str, fix: str) -> NoReturn:
        raise ConfigError(self.key(name), problem, fix)

    # -- access ----------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = REQUIRED) -> Any:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if default is REQUIRED:
                self.fail(name, "is required but missing", f"add `{name}:` to this section")
            return default
        return self.data[name]

    def _typed(self, name: str, default: Any, kinds: tuple[type, ...], what: str,
               example: str) -> Any:
        value = self.raw(name, default)
        if value is default and name not in self.data:
            return value
        if value is default:
            return value
        if isinstance(value, bool) and bool not in kinds:
            quote = (f"; YAML reads a bare yes/no/on/off/true/false as a boolean: quote it, `{name}: \"...\"`"
                     if str in kinds else "")
            self.fail(name, f"must be {what}, got {_type_name(value)}", f"write e.g. `{name}: {example}`{quote}")
        if not isinstance(value, kinds):
            self.fail(name, f"must be {what}, got {_type_name(value)}", f"write e.g. `{name}: {example}`")
        return value

    def string(self, name: str, default: Any = REQUIRED, *, choices: Sequence[str] | None = None,
               pattern: str | None = None, pattern_fix: str = "", example: str = "value",
               nonempty: bool = True) -> Any:
        value = self._typed(name, default, (str,), "a string", example)
        if not isinstance(value, str):
            return value
        if nonempty and not value.strip():
            self.fail(name, "is empty", f"write e.g. `{name}: {example}`")
        if choices is not None and value not in choices:
            self.fail(name, f"{value!r} is not one of {', '.join(choices)}",
                      f"use one of: {', '.join(choices)}")
        if pattern is not None and not re.fullmatch(pattern, value):
            self.fail(name, f"{value!r} is not allowed", pattern_fix or f"match {pattern}")
        return value

    def boolean(self, name: str, default: Any = REQUIRED) -> Any:
        return self._typed(name, default, (bool,), "true or false", "true")

    def integer(self, name: str, default: Any = REQUIRED, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        value = self._typed(name, default, (int,), "a whole number", str(minimum or 1))
        if isinstance(value, int):
            self._check_range(name, value, minimum, maximum)
        return value

    def number(self, name: str, default: Any = REQUIRED, *, minimum: float | None = None,
               maximum: float | None = None) -> Any:
        value = self._typed(name, default, (int, float), "a number", str(minimum or 1))
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                self.fail(name, f"{value} is not a finite number", "write a plain number")
            self._check_range(name, value, minimum, maximum)
            return float(value)
        return value

    def _check_range(self, name: str, value: float, minimum: float | None,
                     maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            self.fail(name, f"{value} is below the minimum {minimum}", f"use a value >= {minimum}")
        if maximum is not None and value > maximum:
            self.fail(name, f"{value} is above the maximum {maximum}", f"use a value <= {maximum}")

    def duration(self, name: str, default: Any = REQUIRED, *, minimum: float | None = None,
                 maximum: float | None = None) -> Any:
        value = self.raw(name, default)
        if value is default and (name not in self.data or self.data[name] is None):
            return value
        seconds = parse_duration(value, self.key(name))
        if minimum is not None and seconds < minimum:
            self.fail(name, f"{value!r} is shorter than the minimum {format_duration(minimum)}",
                      f"use at least {format_duration(minimum)}")
        if maximum is not None and seconds > maximum:
            self.fail(name, f"{value!r} is longer than the maximum {format_duration(maximum)}",
                      f"use at most {format_duration(maximum)}")
        return seconds

    def size(self, name: str, default: Any = REQUIRED) -> Any:
        value = self.raw(name, default)
        if value is default and (name not in self.data or self.data[name] is None):
            return value
        return parse_size(value, self.key(name))

    def regex(self, name: str, default: Any = REQUIRED) -> Any:
        value = self.string(name, default, example="^eth")
        if not isinstance(value, str):
            return value
        try:
            re.compile(value)
        except re.error as exc:
            self.fail(name, f"{value!r} is not a valid regular expression ({exc})",
                      "fix the pattern (Python re syntax); quote it in YAML")
        return value

    def section(self, name: str) -> Reader:
        value = self.raw(name, None)
        return Reader(value if value is not None else {}, self.key(name))

    def items(self, name: str, parse: Callable[[Reader], T], default: Any = REQUIRED) -> Any:
        """A list of mappings, each parsed by ``parse`` with its own Reader."""
        value = self.raw(name, default)
        if value is default and name not in self.data:
            return value
        if not isinstance(value, list):
            self.fail(name, f"must be a list, got {_type_name(value)}",
                      f"write each entry on its own line starting with `- ` under `{name}:`")
        out = []
        for index, item in enumerate(value):
            reader = Reader(item, join_key(self.key(name), index))
            out.append(parse(reader))
            reader.finish()
        return out

    def strings(self, name: str, default: Any = REQUIRED) -> Any:
        value = self.raw(name, default)
        if value is default and name not in self.data:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, f"must be a list of strings, got {_type_name(value)}",
                      f"write e.g. `{name}: [\"a\", \"b\"]`")
        return list(value)

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            import difflib  # only for a mistake: not loaded by an agent whose config is right

            name = str(unknown[0])
            close = difflib.get_close_matches(name, [str(k) for k in self.used], n=1)
            hint = f"did you mean `{close[0]}`?" if close else (
                "remove it; known keys here: " + ", ".join(sorted(str(k) for k in self.used))
            )
            self.fail(name, "is not a known setting", hint)


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
