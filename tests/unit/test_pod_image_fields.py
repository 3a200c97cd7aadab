"""Every pod-spec field naming an image is verified and documented: the fields are derived from the Kubernetes
OpenAPI model that the pinned `kubernetes` client carries, and compared with the webhook's definition and the
README's table. A field that a new Kubernetes release adds (as image volumes were in 1.31) fails here."""

from __future__ import annotations

import re
from pathlib import Path

from kubernetes import client

from webhook.admission import POD_IMAGE_FIELDS

REPO = Path(__file__).resolve().parents[2]
# String fields (model, field) that mention images without naming one the kubelet pulls.
NOT_IMAGE_REFERENCES = {
    ("V1Container", "imagePullPolicy"),
    ("V1EphemeralContainer", "imagePullPolicy"),
    ("V1ImageVolumeSource", "pullPolicy"),
    ("V1RBDVolumeSource", "image"),  # a Ceph RADOS block device, mapped by the node, not pulled
}
LIST_TYPE = re.compile(r"List\[(.+)\]")
MAP_TYPE = re.compile(r"Dict\[str, (.+)\]")


def kubernetes_release() -> tuple[int, int]:
    """The Kubernetes release whose OpenAPI document the client was generated from (1.37 for client 37.0.2)."""
    match = re.search(r"release-(\d+)\.(\d+)", client.Configuration().to_debug_report())
    assert match, "the kubernetes client does not say which OpenAPI release it was generated from"
    return int(match.group(1)), int(match.group(2))


def image_fields(model: str, prefix: str = "", seen: frozenset[str] = frozenset()) -> set[str]:
    """Paths (`volumes[].image.reference`) of the string fields under `model` that may name an image: any whose
    name mentions an image, and every string field of a model about images (such as V1ImageVolumeSource)."""
    model_class = getattr(client, model)
    found = set()
    for attribute, type_name in model_class.openapi_types.items():
        name = model_class.attribute_map[attribute]
        path, element = f"{prefix}{name}", type_name
        while (nested := LIST_TYPE.fullmatch(element) or MAP_TYPE.fullmatch(element)) is not None:
            path += "[]" if element.startswith("List") else "{}"
            element = nested.group(1)
        if element == "str":
            if ("image" in name.lower() or "image" in model.lower()) and (model, name) not in NOT_IMAGE_REFERENCES:
                found.add(path)
        elif hasattr(client, element) and element not in seen:
            found |= image_fields(element, f"{path}.", seen | {model})
    return found


def readme_table() -> dict[str, list[str]]:
    """The webhook section's table of image fields: `spec.` path -> the other cells of its row."""
    section = (REPO / "README.md").read_text().split("## The webhook", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        field = re.match(r"`spec\.([^`]+)`", cells[0])
        if field:
            rows[field.group(1)] = cells[1:]
    return rows


def test_the_model_knows_image_volumes() -> None:
    # Without V1ImageVolumeSource the walk below could not see image volumes, and would pass for the wrong reason.
    assert kubernetes_release() >= (1, 35)
    assert client.V1Volume.openapi_types["image"] == "V1ImageVolumeSource"
    assert "reference" in client.V1ImageVolumeSource.openapi_types


def test_the_walk_finds_the_known_fields() -> None:
    assert image_fields("V1PodSpec") == {
        "containers[].image", "initContainers[].image", "ephemeralContainers[].image", "volumes[].image.reference"}


def test_the_webhook_reads_every_image_field() -> None:
    defined = {f"{field.list_name}[].{'.'.join(field.reference_path)}" for field in POD_IMAGE_FIELDS}
    assert defined == image_fields("V1PodSpec")


def test_the_readme_lists_every_image_field_as_covered() -> None:
    table = readme_table()
    assert set(table) == image_fields("V1PodSpec")
    for field, (introduced, validated, pinned) in table.items():
        assert re.match(r"1\.\d+", introduced), (field, introduced)
        assert (validated, pinned) == ("yes", "yes"), field
