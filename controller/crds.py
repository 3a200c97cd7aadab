"""CustomResourceDefinitions generated from the pydantic models, so the two can never drift apart.

`python -m controller.crds [DIR]` writes `crds/truststores.yaml` and `crds/trustpolicies.yaml`; a test
checks the committed files are exactly what the models generate. The schemas are structural and use no
CEL, so they load on Kubernetes 1.20 as well as on current versions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from webhook.policy.models import (
    GROUP,
    VERSION,
    TrustPolicySpec,
    TrustPolicyStatus,
    TrustStoreSpec,
    TrustStoreStatus,
)

_READY = '.status.conditions[?(@.type=="Ready")].status'
_KEPT = ("type", "description", "enum", "pattern", "minLength", "maxLength", "minimum", "maximum",
         "minItems", "maxItems", "format")


def _structural(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema node into a structural OpenAPI v3 schema node."""
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
        return _structural(merged, definitions)
    if "anyOf" in node:
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"only optional single types map to a structural schema: {node}")
        outer = {key: value for key, value in node.items() if key != "anyOf"}
        return _structural({**options[0], **outer}, definitions)
    result: dict[str, Any] = {key: node[key] for key in _KEPT if key in node}
    if "const" in node:
        result["enum"] = [node["const"]]
    default = node.get("default")
    if isinstance(default, str | int | bool) and not isinstance(default, dict):
        result["default"] = default
    if "items" in node:
        result["items"] = _structural(node["items"], definitions)
    if "properties" in node:
        result["type"] = "object"
        result["properties"] = {name: _structural(child, definitions)
                                for name, child in node["properties"].items()}
        if node.get("required"):
            result["required"] = sorted(node["required"])
    if node.get("additionalProperties") is True:
        result["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(node.get("additionalProperties"), dict):
        result["additionalProperties"] = _structural(node["additionalProperties"], definitions)
    return result


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return _structural(schema, schema.get("$defs", {}))


def _crd(kind: str, plural: str, short_names: list[str], spec: type[BaseModel], status: type[BaseModel],
         columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": short_names},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    *columns,
                    {"name": "Ready", "type": "string", "jsonPath": _READY},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": model_schema(spec),
                        "status": model_schema(status),
                    },
                }},
            }],
        },
    }


def custom_resource_definitions() -> dict[str, dict[str, Any]]:
    """File name -> CRD document."""
    return {
        "truststores.yaml": _crd(
            "TrustStore", "truststores", ["tstore"], TrustStoreSpec, TrustStoreStatus,
            [{"name": "Keys", "type": "integer", "jsonPath": ".status.keyCount"}],
        ),
        "trustpolicies.yaml": _crd(
            "TrustPolicy", "trustpolicies", ["tpol"], TrustPolicySpec, TrustPolicyStatus,
            [{"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
             {"name": "Authorities", "type": "integer", "jsonPath": ".status.authorityCount"}],
        ),
    }


def render(document: dict[str, Any]) -> str:
    header = "# Generated from webhook/policy/models.py by `make crds`; do not edit by hand.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    """Write the CRDs into each directory named (the top-level crds/ and the chart's crds/ by default)."""
    root = Path(__file__).parents[1]
    for directory in [Path(arg) for arg in argv] or [root / "crds", root / "charts" / "trustgate" / "crds"]:
        directory.mkdir(parents=True, exist_ok=True)
        for name, document in custom_resource_definitions().items():
            (directory / name).write_text(render(document), encoding="utf-8")
            print(f"wrote {directory / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
