"""`srt`: the SRT and BELABOX telemetry collector family.

One `metrics:` entry lists several sources (SRT servers' stats APIs, srt-live-transmit
JSON statistics, the belaUI websocket, srtla Prometheus metrics). Every interval each
enabled source is polled in parallel, each within its own timeout; their samples are
merged. A source that fails yields no samples, counts an error with the reason (kept per
source for the health endpoint) and logs a warning at most once a minute. Only when every
source fails does ``collect`` raise ``CollectorError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorError,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.collectors.srt.common import (
    SOURCE_TYPES,
    Source,
    SourceBuildContext,
    SourceError,
)
from belabox_metrics.logs import foreign_text
from belabox_metrics.model import Sample
from belabox_metrics.validation import Reader

if TYPE_CHECKING:  # imported when polling starts: 2.5 MB of RSS an agent without sources never pays
    import concurrent.futures

NAME = "srt"
DEFAULT_TIMEOUT = 2.0
# A failing source logs a warning when it starts failing, when the reason changes, and
# then at most this often.
WARN_EVERY_S = 60.0
# A source's last error on /health and in `status`: at most this many characters.
LAST_ERROR_CHARS = 200


@dataclass(frozen=True)
class SourceConfig:
    key: str
    type: str
    enabled: bool
    timeout: float
    options: Any


@dataclass(frozen=True)
class SrtOptions:
    sources: tuple[SourceConfig, ...]


def parse_source(reader: Reader) -> SourceConfig:
    kinds = sorted(SOURCE_TYPES)
    kind = reader.string("type", example="sls")
    if kind not in SOURCE_TYPES:
        reader.fail("type", f"{kind!r} is not a known SRT source type",
                    "use one of: " + ", ".join(kinds))
    enabled = reader.boolean("enabled", True)
    timeout = reader.duration("timeout", DEFAULT_TIMEOUT, minimum=0.05, maximum=60)
    options = SOURCE_TYPES[kind].parse(reader)
    return SourceConfig(reader.path, kind, enabled, timeout, options)


def parse_options(reader: Reader) -> SrtOptions:
    entry_enabled = reader.data.get("enabled", True) is not False
    if entry_enabled:
        sources = reader.items("sources", parse_source)
    else:
        sources = reader.items("sources", parse_source, [])
    if entry_enabled and not any(s.enabled for s in sources):
        reader.fail("sources", "has no enabled source",
                    "list at least one source, e.g. `- {type: sls, url: \"http://server:8181/stats\"}`")
    return SrtOptions(tuple(sources))


class SourceRuntime:
    """One source plus what the collector knows about its health."""

    def __init__(self, index: int, config: SourceConfig, source: Source | None,
                 broken: str | None = None) -> None:
        self.id = f"{config.type}#{index}"
        self.config = config
        self.source = source
        self.broken = broken
        self.errors = 0
        self.consecutive = 0
        self.last_error: str | None = None
        self.last_ok_ms: int | None = None
        self.pending: concurrent.futures.Future[list[Sample]] | None = None
        self.warned_at: float | None = None
        self.warned_reason: str | None = None

    def poll(self, now_ms: int) -> list[Sample]:
        if self.source is None:
            raise SourceError(self.broken or "not available")
        return self.source.poll(now_ms)


class SrtCollector:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 *, only: frozenset[str] | None = None) -> None:
        options: SrtOptions = settings.options
        self.ctx = ctx
        self.log: logging.Logger = ctx.log.getChild(settings.name)
        self.only = only
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.runtimes: list[SourceRuntime] = []
        for index, config in enumerate(options.sources):
            if not config.enabled:
                continue
            build_ctx = SourceBuildContext(key=config.key, log=self.log, timeout=config.timeout)
            try:
                source: Source | None = SOURCE_TYPES[config.type].build(config.options, build_ctx)
                self.runtimes.append(SourceRuntime(index, config, source))
            except (SourceError, OSError) as exc:
                self.runtimes.append(SourceRuntime(index, config, None, str(exc)))

    # -- health -----------------------------------------------------------------------
    @property
    def errors(self) -> dict[str, int]:
        """Errors counted per source id (`<type>#<index in sources>`)."""
        return {r.id: r.errors for r in self.runtimes}

    @property
    def last_error(self) -> str | None:
        """The latest reason of a source that is failing now, or None when all are fine."""
        failing = [r for r in self.runtimes if r.consecutive > 0]
        return f"{failing[-1].id}: {failing[-1].last_error}" if failing else None

    @property
    def degraded(self) -> bool:
        return any(r.consecutive > 0 for r in self.runtimes)

    def source_status(self) -> list[dict[str, Any]]:
        """Each enabled source: its name (`<type>#<index in sources>`), what it reads (URLs
        redacted), whether it fails now, and the reason while it does (masked, at most
        LAST_ERROR_CHARS characters; None once it answers again)."""
        return [
            {"name": r.id, "type": r.config.type,
             "target": r.source.display if r.source is not None else r.config.type,
             "status": "failing" if r.consecutive > 0 else "ok", "errors": r.errors,
             "failing_polls": r.consecutive,
             "last_error": foreign_text(r.last_error, LAST_ERROR_CHARS) if r.consecutive > 0 and r.last_error
             else None,
             "last_ok_ms": r.last_ok_ms}
            for r in self.runtimes
        ]

    # -- collect ----------------------------------------------------------------------
    def collect(self, now_ms: int) -> list[Sample]:
        if not self.runtimes:
            raise CollectorError("no enabled SRT source")
        results: dict[str, list[Sample] | str] = {}
        if len(self.runtimes) == 1:
            runtime = self.runtimes[0]
            results[runtime.id] = self._poll_inline(runtime, now_ms)
        else:
            results = self._poll_parallel(now_ms)
        samples: list[Sample] = []
        failures: list[str] = []
        for runtime in self.runtimes:
            result = results[runtime.id]
            if isinstance(result, str):
                self._record_failure(runtime, result)
                failures.append(f"{runtime.id}: {result}")
            else:
                self._record_success(runtime, now_ms)
                samples += result
        if len(failures) == len(self.runtimes):
            raise CollectorError("every SRT source failed: " + "; ".join(failures))
        if self.only is not None:
            samples = [s for s in samples if s.name in self.only]
        return samples

    def _poll_inline(self, runtime: SourceRuntime, now_ms: int) -> list[Sample] | str:
        try:
            return runtime.poll(now_ms)
        except SourceError as exc:
            return str(exc)
        except Exception as exc:  # a bug in a parser must not stop the agent
            self.log.debug("srt source %s crashed", runtime.id, exc_info=True)
            return f"internal error: {type(exc).__name__}"

    def _poll_parallel(self, now_ms: int) -> dict[str, list[Sample] | str]:
        import concurrent.futures

        if self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=len(self.runtimes), thread_name_prefix="srt-source")
        results: dict[str, list[Sample] | str] = {}
        futures: dict[concurrent.futures.Future[list[Sample] | str], SourceRuntime] = {}
        for runtime in self.runtimes:
            if runtime.pending is not None and not runtime.pending.done():
                results[runtime.id] = "previous poll still running (source hangs)"
                continue
            runtime.pending = None
            future = self.executor.submit(self._poll_inline, runtime, now_ms)
            futures[future] = runtime
        if futures:
            grace = max(r.config.timeout for r in futures.values()) + 0.5
            concurrent.futures.wait(futures, timeout=grace)
        for future, runtime in futures.items():
            if future.done():
                results[runtime.id] = future.result()
            else:
                runtime.pending = future  # type: ignore[assignment]
                results[runtime.id] = f"no answer within {runtime.config.timeout:g}s"
        return results

    def _record_success(self, runtime: SourceRuntime, now_ms: int) -> None:
        if runtime.consecutive:
            self.log.info("srt source %s recovered after %d failed polls",
                          runtime.id, runtime.consecutive)
        runtime.consecutive = 0
        runtime.last_ok_ms = now_ms
        runtime.warned_at = None
        runtime.warned_reason = None

    def _record_failure(self, runtime: SourceRuntime, reason: str) -> None:
        runtime.errors += 1
        runtime.consecutive += 1
        reason = foreign_text(reason, 500)  # a server's error text may echo a credential
        runtime.last_error = reason
        now = self.ctx.clock.monotonic()
        if (runtime.warned_at is None or reason != runtime.warned_reason
                or now - runtime.warned_at >= WARN_EVERY_S):
            extra = f" ({runtime.consecutive} failed polls in a row)" if runtime.consecutive > 1 else ""
            self.log.warning("srt source %s (%s) gives no data: %s%s", runtime.id,
                             runtime.source.display if runtime.source else runtime.config.type,
                             reason, extra)
            runtime.warned_at = now
            runtime.warned_reason = reason

    def close(self) -> None:
        for runtime in self.runtimes:
            if runtime.source is not None:
                try:
                    runtime.source.close()
                except Exception:  # closing must go on for the others
                    self.log.debug("closing %s failed", runtime.id, exc_info=True)
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None


SPEC = register(CollectorSpec(
    name=NAME,
    factory=SrtCollector,
    description="SRT link and BELABOX device telemetry from servers' stats APIs, "
                "srt-live-transmit, belaUI and srtla",
    default_interval=1.0,
    parse_options=parse_options,
))
