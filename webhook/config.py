"""Loading TrustStore and TrustPolicy manifests from a directory, the files you would `kubectl apply`.

Every fault is reported as `FILE: Kind NAME: spec.path.to.field: what is wrong`. Documents of other API
groups (a Namespace, a Secret) are skipped with a log line; a document that claims the trustgate.dev group
but is not a valid TrustStore or TrustPolicy is an error. A `kind: List` document, what `kubectl get -o yaml`
prints for several objects, is read item by item.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from webhook.policy.models import GROUP, TrustPolicy, TrustStore
from webhook.validation import validation_errors

log = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class ConfigFileError(Exception):
    """A configuration fault located in a file and a resource."""


@dataclass(frozen=True, slots=True)
class Origin:
    file: str
    kind: str
    name: str

    def error(self, path: str, message: str) -> ConfigFileError:
        located = f"{path}: {message}" if path else message
        return ConfigFileError(f"{self.file}: {self.kind} {self.name}: {located}")


@dataclass(frozen=True, slots=True)
class LoadedResources:
    stores: tuple[tuple[Origin, TrustStore], ...]
    policies: tuple[tuple[Origin, TrustPolicy], ...]


# libyaml's parser (a thousand TrustPolicies load ten times faster than with the pure-Python one) under
# PyYAML's own safe constructor.
class _UniqueKeyLoader(yaml.CSafeLoader):
    """PyYAML keeps the last of duplicate keys; in a security policy that hides the first, so refuse."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def config_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ConfigFileError(f"{directory}: not a directory")
    return sorted(path for path in directory.rglob("*") if path.is_file() and path.suffix in CONFIG_SUFFIXES)


def _documents(path: Path) -> list[tuple[str, Any]]:
    """Each document of the file with its place (`document 2`, or `document 1 item 3` inside a List)."""
    try:
        text = path.read_text(encoding="utf-8")
        documents = list(yaml.load_all(text, Loader=_UniqueKeyLoader))
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None
    found: list[tuple[str, Any]] = []
    for number, document in enumerate(documents, start=1):
        if isinstance(document, dict) and document.get("apiVersion") == "v1" and document.get("kind") == "List":
            items = document.get("items")
            if not isinstance(items, list):
                raise ConfigFileError(f"{path}: document {number}: a List whose items is not a list")
            found.extend((f"document {number} item {index}", item) for index, item in enumerate(items, start=1))
        else:
            found.append((f"document {number}", document))
    return found


def _parse(origin: Origin, model: type[TrustStore] | type[TrustPolicy], document: dict[str, Any]) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        path, message = validation_errors(exc)[0]
        raise origin.error(path, message) from None


def load_resources(directory: Path) -> LoadedResources:
    stores: dict[str, tuple[Origin, TrustStore]] = {}
    policies: dict[str, tuple[Origin, TrustPolicy]] = {}
    for path in config_files(directory):
        for place, document in _documents(path):
            if document is None:
                continue
            if not isinstance(document, dict):
                raise ConfigFileError(f"{path}: {place}: not a mapping")
            api_version = str(document.get("apiVersion", ""))
            kind = str(document.get("kind", ""))
            if api_version.split("/", 1)[0] != GROUP:
                log.info("%s: %s: skipping %s %s (not a trustgate resource)", path, place,
                         api_version or "(no apiVersion)", kind or "(no kind)")
                continue
            metadata = document.get("metadata")
            name = metadata.get("name") if isinstance(metadata, dict) else None
            origin = Origin(str(path), kind or "(no kind)", str(name) if name else f"({place})")
            if kind == "TrustStore":
                target: dict[str, Any] = stores
                resource = _parse(origin, TrustStore, document)
            elif kind == "TrustPolicy":
                target = policies
                resource = _parse(origin, TrustPolicy, document)
            else:
                raise origin.error("kind", f"unknown kind {kind!r} in {GROUP} (TrustStore or TrustPolicy)")
            if resource.metadata.name in target:
                first = target[resource.metadata.name][0]
                raise origin.error("metadata.name", f"duplicate {kind} name, first defined in {first.file}")
            target[resource.metadata.name] = (origin, resource)
    if not stores and not policies:
        raise ConfigFileError(f"{directory}: no TrustStore or TrustPolicy found")
    return LoadedResources(tuple(stores.values()), tuple(policies.values()))
