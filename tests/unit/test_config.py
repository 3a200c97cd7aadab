"""Configuration faults name the file, the resource and the field, and load nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import trust_policy, trust_store
from webhook.config import ConfigFileError, load_resources
from webhook.policy.compile import compile_policy_set

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_KEY = next(document for document in yaml.safe_load_all((REPO / "examples/config/truststore.yaml").read_text())
                   if document)["spec"]["keys"][0]["gpg"]
GPG = {"name": "release", "gpg": {"trustStore": "release"}}


def write(directory: Path, text: str, name: str = "trust.yaml") -> Path:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return directory


def dump(*documents: object) -> str:
    return yaml.safe_dump_all(documents)


def load_error(directory: Path) -> str:
    with pytest.raises(ConfigFileError) as caught:
        compile_policy_set(load_resources(directory)).close()
    return str(caught.value)


def test_example_configuration_compiles() -> None:
    policies = compile_policy_set(load_resources(REPO / "examples" / "config"))
    try:
        assert [policy.name for policy in policies.policies] == ["team-images"]
        assert policies.matching("registry.example.com/team/app")
        assert not policies.matching("registry.example.com/other/app")
    finally:
        policies.close()


def test_unknown_field_is_located(tmp_path: Path) -> None:
    policy = trust_policy("app", ["example.com/**"], [GPG], modes="enforce")
    message = load_error(write(tmp_path, dump(trust_store("release", {"k": EXAMPLE_KEY}), policy)))
    assert message == f"{tmp_path / 'trust.yaml'}: TrustPolicy app: spec.modes: unknown field"


def test_missing_trust_store_is_located(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, dump(trust_policy("app", ["example.com/**"], [GPG]))))
    assert message.startswith(f"{tmp_path / 'trust.yaml'}: TrustPolicy app: spec.authorities[0].gpg.trustStore: ")
    assert "release" in message


def test_unknown_key_in_subset_is_located(tmp_path: Path) -> None:
    authority = {"name": "release", "gpg": {"trustStore": "release", "keys": ["nope"]}}
    message = load_error(write(tmp_path, dump(trust_store("release", {"k": EXAMPLE_KEY}),
                                              trust_policy("app", ["example.com/**"], [authority]))))
    assert "TrustPolicy app: spec.authorities[0].gpg.keys" in message and "nope" in message


def test_unusable_key_material_is_located(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, dump(trust_store("release", {"broken": "not a key"}))))
    assert message.startswith(f"{tmp_path / 'trust.yaml'}: TrustStore release: spec.keys[0].gpg: ")


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    text = "apiVersion: trustgate.dev/v1alpha1\nkind: TrustPolicy\nkind: TrustStore\nmetadata: {name: a}\n"
    message = load_error(write(tmp_path, text))
    assert "duplicate key 'kind'" in message


def test_duplicate_resource_names_are_refused(tmp_path: Path) -> None:
    store = dump(trust_store("release", {"k": EXAMPLE_KEY}))
    write(tmp_path, store, "a.yaml")
    write(tmp_path, store, "b.yaml")
    message = load_error(tmp_path)
    assert "b.yaml: TrustStore release: metadata.name: duplicate TrustStore name, first defined in" in message


def test_unknown_kind_in_group_is_refused(tmp_path: Path) -> None:
    text = dump({"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustPolcy", "metadata": {"name": "x"}})
    assert "unknown kind 'TrustPolcy'" in load_error(write(tmp_path, text))


def test_other_api_groups_are_skipped(tmp_path: Path) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    write(tmp_path, dump(namespace, trust_store("release", {"k": EXAMPLE_KEY})))
    loaded = load_resources(tmp_path)
    assert [store.metadata.name for _, store in loaded.stores] == ["release"]


def test_kubectl_list_documents_are_read_item_by_item(tmp_path: Path) -> None:
    """`kubectl get truststores,trustpolicies -o yaml` prints one List; its items are the configuration."""
    listed = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
              "items": [trust_store("release", {"k": EXAMPLE_KEY}), trust_policy("p", ["**"], [GPG])]}
    loaded = load_resources(write(tmp_path, dump(listed)))
    assert [store.metadata.name for _, store in loaded.stores] == ["release"]
    assert [policy.metadata.name for _, policy in loaded.policies] == ["p"]


def test_faults_inside_a_list_name_the_item(tmp_path: Path) -> None:
    listed = {"apiVersion": "v1", "kind": "List",
              "items": [trust_store("release", {"k": EXAMPLE_KEY}), ["not", "a", "mapping"]]}
    assert "document 1 item 2: not a mapping" in load_error(write(tmp_path, dump(listed)))
    broken = {"apiVersion": "v1", "kind": "List", "items": "nothing"}
    assert "a List whose items is not a list" in load_error(write(tmp_path, dump(broken)))


@pytest.mark.parametrize(("text", "expected"), [
    ("a: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "document 1: not a mapping"),
])
def test_malformed_files_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(write(tmp_path, text))


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    tmp_path.joinpath("trust.yaml").write_bytes(b"kind: \xff\xfe\n")
    assert "not UTF-8 text" in load_error(tmp_path)


def test_empty_directory_is_refused(tmp_path: Path) -> None:
    assert "no TrustStore or TrustPolicy found" in load_error(tmp_path)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    assert "not a directory" in load_error(tmp_path / "absent")


def test_unknown_verifier_type_lists_the_known_ones(tmp_path: Path) -> None:
    authority = {"name": "release", "sigstorez": {"trustStore": "release"}}
    message = load_error(write(tmp_path, dump(trust_store("release", {"k": EXAMPLE_KEY}),
                                              trust_policy("app", ["example.com/**"], [authority]))))
    assert "spec.authorities[0]" in message and "gpg" in message and "sigstorez" in message


def test_two_verifier_types_in_one_authority_are_refused(tmp_path: Path) -> None:
    authority = {"name": "release", "gpg": {"trustStore": "release"}, "other": {}}
    message = load_error(write(tmp_path, dump(trust_store("release", {"k": EXAMPLE_KEY}),
                                              trust_policy("app", ["example.com/**"], [authority]))))
    assert "exactly one verifier type is required" in message
