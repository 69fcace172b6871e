"""docs/configuration.md lists every option the agent reads.

The option list is derived from the code, never from the doc:

- top-level sections: the fields of the settings dataclasses in config.py, recursively
  (`remote.retry.max_attempts`), plus the generic keys of a `metrics:` entry
  (`metrics[].interval`, from MetricSettings);
- each registered collector's own keys: its ``parse_options`` is run on a Reader and
  ``reader.used`` records every key it read (`network.max_interfaces`). A parser that
  stops at a missing required key is run again with that key filled in, until it has
  read everything; the `srt` family's per-source keys are read the same way for every
  source type (`srt.sources[].url`);
- as a cross-check, every key config.py actually reads while parsing a full example.

Each must appear in the doc as a backticked dotted path. A new option fails this test
until it is documented. The defaults in the doc's tables must equal the code's (settings
dataclasses, and collectors whose options parse from an empty entry), and each collector's
section must state its default interval.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from belabox_metrics import config as config_module
from belabox_metrics.collectors.base import MetricSettings, registry
from belabox_metrics.priority import PrioritySettings, class_index
from belabox_metrics.validation import ConfigError, Reader, parse_duration, parse_size
from tests.helpers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "configuration.md"
# Fields of the settings dataclasses that are not read from the config file.
NOT_OPTIONS = {
    "source": "where the settings came from (the file path), set by load_config",
    "metrics[].options": "the collector's parsed own keys, listed per collector below",
    "remote.tls.key": "the section's own dotted path, for error messages (TlsSettings.key)",
}
# Values tried, in order, for a key a parser requires: enough for every parser to read on.
FILLERS: tuple[object, ...] = ("http://127.0.0.1:1/", [], True, 1, "1s")
MAX_PARSE_ROUNDS = 50


def documented() -> set[str]:
    return set(re.findall(r"`([^`\s]+)`", DOC.read_text()))


# -- from the dataclasses -------------------------------------------------------------

def dataclass_of(annotation: Any) -> type | None:
    """The dataclass an annotation names, looking through `X | None` and tuple[X, ...]."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple):
        for arg in args:
            found = dataclass_of(arg)
            if found is not None:
                return found
    return None


def dataclass_options(cls: type, prefix: str = "") -> Iterator[str]:
    hints = typing.get_type_hints(cls, vars(config_module))
    for item in dataclasses.fields(cls):
        path = f"{prefix}{item.name}"
        nested = dataclass_of(hints[item.name])
        if nested is MetricSettings:
            yield from dataclass_options(nested, f"{path}[].")
        elif nested is not None:
            yield from dataclass_options(nested, f"{path}.")
        else:
            yield path


def settings_options() -> set[str]:
    return {o for o in dataclass_options(config_module.Settings) if o not in NOT_OPTIONS}


# -- from the parsers -------------------------------------------------------------------

def keys_read(parse: Callable[[Reader], Any], data: dict[str, Any] | None = None) -> set[str]:
    """Every key ``parse`` reads, filling required keys until it runs through (or gives up)."""
    data = dict(data or {})
    tried: dict[str, int] = {}
    used: set[str] = set()
    for _ in range(MAX_PARSE_ROUNDS):
        reader = Reader(data, "")
        try:
            parse(reader)
        except ConfigError as exc:
            used |= reader.used
            key = exc.key.rsplit(".", 1)[-1]
            attempt = tried.get(key, 0)
            if attempt >= len(FILLERS):
                return used
            tried[key] = attempt + 1
            data[key] = FILLERS[attempt]
            continue
        return used | reader.used
    raise AssertionError(f"{parse} did not settle in {MAX_PARSE_ROUNDS} rounds")


def collector_options() -> set[str]:
    out = set()
    for name, spec in registry().items():
        keys = keys_read(spec.parse_options) | keys_read(spec.parse_options, {"sources": []})
        out |= {f"{name}.{key}" for key in keys}
    return out


def srt_source_options() -> set[str]:
    """`srt.sources[].<key>` for every key any source type reads (documented once, under
    `srt`; srt.packet_loss takes the same list)."""
    from belabox_metrics.collectors.srt import parse_source
    from belabox_metrics.collectors.srt.common import SOURCE_TYPES

    keys: set[str] = set()
    for kind in SOURCE_TYPES:
        keys |= keys_read(parse_source, {"type": kind})
    return {f"srt.sources[].{key}" for key in keys}


def source_types() -> set[str]:
    from belabox_metrics.collectors.srt.common import SOURCE_TYPES

    return set(SOURCE_TYPES)


# -- what config.py really reads ---------------------------------------------------------

FULL_EXAMPLE = """
device: {id: box}
storage: {path: /tmp/x.db}
remote: {url: "http://127.0.0.1:8428/api/v1/import"}
metrics:
  - {name: memory}
"""


def keys_config_reads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Leaf keys (dotted paths) the real parse_config asks a Reader for, on FULL_EXAMPLE."""
    seen: set[str] = set()
    original = Reader.raw

    def recording_raw(self: Reader, name: str, *args: Any, **kwargs: Any) -> Any:
        seen.add(re.sub(r"\[\d+\]", "[]", self.key(name)))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(Reader, "raw", recording_raw)
    config_module.parse_config(FULL_EXAMPLE)
    return {key for key in seen if not any(other.startswith((key + ".", key + "[")) for other in seen)}


# -- defaults -------------------------------------------------------------------------

# Options whose default the doc states in words because the code has none to compare.
DEFAULT_IN_WORDS = {"metrics[].interval": "per collector",
                    "remote.priority.classes": "see below"}  # test_default_priority_classes_are_documented
REQUIRED = object()


def doc_rows() -> dict[str, tuple[str, str]]:
    """`key` -> (type, default cell) from every option table row (first row wins)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]
        if len(cells) >= 5 and re.fullmatch(r"`[^`]+`", cells[1]):
            rows.setdefault(cells[1].strip("`"), (cells[2], cells[3]))
    return rows


def doc_default(kind: str, cell: str) -> object:
    if cell == "required":
        return REQUIRED
    if cell == "none":
        return None
    text = cell.strip("`")
    parsers: dict[str, Callable[[str], object]] = {
        "duration": lambda t: parse_duration(t, "doc"), "size": lambda t: parse_size(t, "doc"),
        "integer": int, "number": float, "boolean": {"true": True, "false": False}.__getitem__,
        "class": class_index,
        "list of classes": lambda t: tuple(class_index(c.strip()) for c in t.strip("[]").split(",")),
    }
    return parsers.get(kind, str)(text)


def settings_defaults(cls: type = config_module.Settings, prefix: str = "") -> Iterator[tuple[str, object]]:
    hints = typing.get_type_hints(cls, vars(config_module))
    for item in dataclasses.fields(cls):
        path = f"{prefix}{item.name}"
        nested = dataclass_of(hints[item.name])
        if nested is MetricSettings:
            yield from settings_defaults(nested, f"{path}[].")
        elif nested is not None:
            yield from settings_defaults(nested, f"{path}.")
        elif path not in NOT_OPTIONS:
            if item.default is not dataclasses.MISSING:
                yield path, item.default
            elif item.default_factory is not dataclasses.MISSING:
                yield path, item.default_factory()
            else:
                yield path, REQUIRED


def collector_defaults() -> Iterator[tuple[str, object]]:
    """Defaults of collectors whose options parse from an empty entry: the parsed object's
    attribute of the same name as the key."""
    for name, spec in registry().items():
        reader = Reader({}, "")
        try:
            options = spec.parse_options(reader)
        except ConfigError:
            continue
        for key in reader.used:
            if hasattr(options, key):
                yield f"{name}.{key}", getattr(options, key)


# -- the tests --------------------------------------------------------------------------

def missing_from_doc(options: set[str]) -> list[str]:
    return sorted(options - documented())


def test_every_settings_option_is_documented() -> None:
    options = settings_options()
    assert {"device.id", "remote.retry.max_attempts", "metrics[].interval"} <= options
    assert not missing_from_doc(options), "document these in docs/configuration.md"


def test_every_collector_option_is_documented() -> None:
    options = collector_options()
    assert {"network.max_interfaces", "cpu.per_core", "srt.sources"} <= options
    assert not missing_from_doc(options), "document these in docs/configuration.md"


def test_every_srt_source_option_and_type_is_documented() -> None:
    options = srt_source_options()
    assert {"srt.sources[].type", "srt.sources[].url", "srt.sources[].stats_file"} <= options
    assert not missing_from_doc(options), "document these in docs/configuration.md"
    text = DOC.read_text()
    for kind in source_types():
        assert f"`type: {kind}`" in text, f"source type {kind} is not documented"


def test_every_registered_collector_has_a_section() -> None:
    headings = set(re.findall(r"^#{3,4} `([^`]+)`", DOC.read_text(), re.M))
    assert set(registry()) <= headings


def test_the_dataclass_fields_are_the_keys_config_py_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Guards the derivation above: a field renamed on one side only would make the doc
    # list a key the parser never reads (or miss one it does).
    read = keys_config_reads(monkeypatch)
    options = settings_options()
    # FULL_EXAMPLE's one metric (memory) has no mock mode, so `mock` is never asked for.
    assert read == options - {"metrics[].mock"}, (sorted(read - options), sorted(options - read))


@pytest.mark.parametrize("source", [settings_defaults, collector_defaults])
def test_documented_defaults_equal_the_codes(source: Callable[[], Iterator[tuple[str, object]]]) -> None:
    rows = doc_rows()
    wrong = []
    for key, default in source():
        if key not in rows:
            continue  # an undocumented option: the tests above name it
        kind, cell = rows[key]
        if key in DEFAULT_IN_WORDS:
            assert cell == DEFAULT_IN_WORDS[key], key
            continue
        if doc_default(kind, cell) != default:
            wrong.append(f"{key}: doc says {cell} ({kind}), code has {default!r}")
    assert not wrong, "\n".join(wrong)


def test_every_collector_section_states_its_default_interval() -> None:
    text = DOC.read_text()
    for name, spec in registry().items():
        section = re.search(rf"^### `{re.escape(name)}`\n(.*?)(?=^### |\Z)", text, re.S | re.M)
        assert section, name
        stated = re.search(r"Default interval\s+`([^`]+)`", section.group(1))
        assert stated, f"{name}: no 'Default interval `...`'"
        assert parse_duration(stated.group(1), name) == spec.default_interval, name


def test_default_priority_classes_are_documented() -> None:
    # The doc's YAML example of the defaults, parsed as a config, gives the code's defaults.
    block = re.search(r"The default classes:\n\n```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/configuration.md: the default classes example is missing"
    text = "device: {id: box}\nstorage: {path: m.db}\nmetrics: [{name: memory}]\n" + block.group(1).replace(
        "remote:\n", "remote:\n  url: http://127.0.0.1:8428/api/v1/import\n", 1)
    assert config_module.parse_config(text).remote.priority == PrioritySettings()
