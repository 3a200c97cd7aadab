"""The committed CRDs are exactly what the models generate, and the API server's schema and the models agree."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from controller.crds import custom_resource_definitions, render
from webhook.policy.models import TrustPolicy, TrustStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples" / "config").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(custom_resource_definitions()))
def test_committed_crd_is_generated_from_the_models(name: str) -> None:
    committed = (REPO / "crds" / name).read_text(encoding="utf-8")
    assert committed == render(custom_resource_definitions()[name]), "run `make crds` and commit the result"


def crd_schema(kind: str) -> dict[str, Any]:
    for document in custom_resource_definitions().values():
        if document["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(kind)


def structural_problems(node: dict[str, Any], path: str) -> list[str]:
    """The API server's structural-schema rules that matter here: a type everywhere, no references."""
    problems = []
    if "$ref" in node or ("anyOf" in node and "type" not in node):
        problems.append(f"{path}: not structural")
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: no type")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("kind", ["TrustStore", "TrustPolicy"])
def test_crd_schema_is_structural(kind: str) -> None:
    assert structural_problems(crd_schema(kind), kind) == []


def examples() -> list[dict[str, Any]]:
    return [document for path in EXAMPLES for document in yaml.safe_load_all(path.read_text()) if document]


MODELS = {"TrustStore": TrustStore, "TrustPolicy": TrustPolicy}


@pytest.mark.parametrize("document", examples(), ids=lambda document: document["kind"])
def test_examples_are_accepted_by_both_the_crd_schema_and_the_models(document: dict[str, Any]) -> None:
    jsonschema.validate(document, crd_schema(document["kind"]))
    MODELS[document["kind"]].model_validate(document)


def _drop_images(document: dict[str, Any]) -> None:
    del document["spec"]["images"]


def _bad_mode(document: dict[str, Any]) -> None:
    document["spec"]["mode"] = "permissive"


def _no_authorities(document: dict[str, Any]) -> None:
    document["spec"]["authorities"] = []


def _bad_rule(document: dict[str, Any]) -> None:
    document["spec"]["authorities"][0]["gpg"]["signedIdentity"] = {"type": "matchAnything"}


def _no_trust_store(document: dict[str, Any]) -> None:
    del document["spec"]["authorities"][0]["gpg"]["trustStore"]


def _bad_threshold(document: dict[str, Any]) -> None:
    document["spec"]["threshold"] = 0


def _no_keys(document: dict[str, Any]) -> None:
    document["spec"]["keys"] = []


def _bad_key_name(document: dict[str, Any]) -> None:
    document["spec"]["keys"][0]["name"] = "-leading-dash"


def _bad_role(document: dict[str, Any]) -> None:
    document["spec"]["keys"][0] = {"name": "roots", "x509": {"role": "root", "certificates": "x"}}


@pytest.mark.parametrize(("kind", "mutate"), [
    *[("TrustPolicy", mutate) for mutate in (_drop_images, _bad_mode, _no_authorities, _bad_rule, _no_trust_store,
                                              _bad_threshold)],
    *[("TrustStore", mutate) for mutate in (_no_keys, _bad_key_name, _bad_role)],
], ids=lambda value: getattr(value, "__name__", value))
def test_invalid_resources_are_refused_by_both(kind: str, mutate: Any) -> None:
    document = next(copy.deepcopy(document) for document in examples() if document["kind"] == kind)
    mutate(document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, crd_schema(kind))
    with pytest.raises(ValidationError):
        MODELS[kind].model_validate(document)


def test_crds_are_cluster_scoped_with_status_and_printer_columns() -> None:
    for document in custom_resource_definitions().values():
        assert document["apiVersion"] == "apiextensions.k8s.io/v1"
        assert document["spec"]["group"] == "trustgate.dev"
        assert document["spec"]["scope"] == "Cluster"
        (version,) = document["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        columns = {column["name"] for column in version["additionalPrinterColumns"]}
        assert {"Ready", "Age"} <= columns
