"""Log output for every trustgate command: `--log-format text` for people, `json` (one object per line) for
log pipelines.

An admission decision is logged as one `Decision`: its fields are gathered once, and rendered as JSON fields
or as a text line only when the record is written.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Decision:
    """One AdmissionReview's decision, logged as the record's message (`log.info(decision)`). Holds only names,
    digests, verdicts and reasons: never credentials or key material, which no verdict carries."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, object]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        fields = self.fields
        # Gathered by the webhook as a list of mappings; rendered once per review, so not checked again here.
        images = cast("Sequence[Mapping[str, Any]]", fields["images"])
        rendered = "; ".join(_image_text(image) for image in images)
        return (f"{fields['webhook']} {fields['uid']} {fields['operation']} {fields['kind']} "
                f"{fields['namespace']}/{fields['name'] or '(generated)'} (policy generation "
                f"{fields['policyGeneration']}){' (dry run)' if fields['dryRun'] else ''}: {rendered}")


def _image_text(image: Mapping[str, Any]) -> str:
    where = f"{image['field']} {image['image']}"
    if image["verdict"] == "admitted":
        return f"{where} admitted"
    return f"{where} denied {'; '.join(image['reasons'])}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(record.msg, Decision):
            entry["message"] = "admission decision"
            entry.update(record.msg.fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, log_format: LogFormat) -> None:
    """Send every log record to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Neither format prints these; not gathering them makes each record (one per admission) cheaper.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Nor where a record was logged from: finding it walks the caller's stack for every record (the logging
    # HOWTO's own advice when it is not printed).
    logging._srcfile = None
