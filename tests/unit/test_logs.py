"""The decision record: one line per AdmissionReview, in either log format."""

from __future__ import annotations

import json
import logging

from webhook.logs import TEXT_FORMAT, Decision, JsonFormatter


def decision() -> Decision:
    image = {"image": "registry.test/app@sha256:" + "a" * 64, "digest": "sha256:" + "a" * 64, "verdict": "denied",
             "policies": ["p"], "authorities": ["p/a"], "codes": ["TG101"], "reasons": ["no signature", "expired"],
             "field": "spec.containers[0].image", "cached": True}
    return Decision({"uid": "u-1", "webhook": "validate", "operation": "CREATE", "kind": "Pod",
                     "namespace": "default", "name": "", "dryRun": True, "policyGeneration": 7, "verdict": "denied",
                     "codes": ["TG101"], "cached": True, "images": [image], "durationMs": 0.5})


def record(message: object) -> logging.LogRecord:
    return logging.getLogger("webhook.app").makeRecord("webhook.app", logging.INFO, __file__, 1, message, (), None)


def test_a_decision_is_one_text_line() -> None:
    line = logging.Formatter(TEXT_FORMAT).format(record(decision()))
    assert "\n" not in line
    assert line.endswith("INFO webhook.app: validate u-1 CREATE Pod default/(generated) (policy generation 7) "
                         "(dry run): spec.containers[0].image registry.test/app@sha256:" + "a" * 64 +
                         " denied no signature; expired")


def test_a_decision_is_one_json_object_with_its_fields() -> None:
    entry = json.loads(JsonFormatter().format(record(decision())))
    assert entry["message"] == "admission decision"
    assert entry["uid"] == "u-1" and entry["policyGeneration"] == 7 and entry["images"][0]["codes"] == ["TG101"]


def test_other_records_keep_their_message_in_json() -> None:
    plain = logging.getLogger("webhook.app").makeRecord("webhook.app", logging.INFO, __file__, 1, "serving %d",
                                                        (3,), None)
    entry = json.loads(JsonFormatter().format(plain))
    assert entry["message"] == "serving 3" and "uid" not in entry
