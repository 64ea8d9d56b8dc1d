"""JSON log lines that carry the workflow's tracing ids.

`correlationid` and `causationid` live in context variables set by the consumer helper and the
HTTP handlers, so every line logged while handling an event names the workflow it belongs to.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id: ContextVar[str | None] = ContextVar("causation_id", default=None)


class TracingFilter(logging.Filter):
    """Copies the current tracing ids onto the record when it is emitted, in its own context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlationid = correlation_id.get()
        record.causationid = causation_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("correlationid", "causationid"):
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(TracingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "pymongo", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    faststream = logging.getLogger("faststream")
    faststream.handlers[:] = []
    faststream.propagate = True
