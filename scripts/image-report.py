#!/usr/bin/env python3
"""The size of the built image and what it is made of, from its OCI layout and its unpacked root file system.

    scripts/image-report.py OCI_LAYOUT ROOTFS BUILD_SECONDS [RECORD_FILE]

Prints a Markdown section; with RECORD_FILE, also puts it between that file's `measured` markers.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

BEGIN = "<!-- begin measured by scripts/build-image.sh -->"
END = "<!-- end measured -->"
SITE_PACKAGES = "opt/trustgate/lib/python3*/site-packages"
# Where the bytes are: the base system's parts (patterns), then trustgate's venv and its largest packages.
PARTS = ("usr/bin", "usr/sbin", "usr/lib/python3.*", "usr/lib/*-linux-gnu", "usr/share", "etc", "var",
         "opt/trustgate")
LARGEST_PACKAGES = 6


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path`, hard links counted once (as a layer's tar stores them)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            status = os.lstat(os.path.join(directory, name))
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                total += status.st_size
    return total


def size_rows(rootfs: Path, pattern: str) -> list[str]:
    return [f"| /{path.relative_to(rootfs)} | {megabytes(tree_size(path))} |" for path in sorted(rootfs.glob(pattern))]


def uncompressed_size(blob: Path) -> int:
    size = 0
    with gzip.open(blob) as stream:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
    return size


def report(layout: Path, rootfs: Path, build_seconds: str) -> str:
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    layers = [(layer["size"], uncompressed_size(blobs / layer["digest"].split(":")[1]))
              for layer in manifest["layers"]]
    lines = [
        f"- image: {megabytes(sum(raw for _, raw in layers))} unpacked, "
        f"{megabytes(sum(packed for packed, _ in layers))} as pushed (gzip layers); "
        f"`buildah bud` took {build_seconds} s",
        *(f"- layer {number} ({'trustgate' if number == len(layers) else 'base'}): {megabytes(raw)} unpacked, "
          f"{megabytes(packed)} gzip" for number, (packed, raw) in enumerate(layers, start=1)),
        "",
        "| directory | size |",
        "| --- | ---: |",
        *(row for part in PARTS for row in size_rows(rootfs, part)),
    ]
    packages = sorted((tree_size(entry), entry.name) for site in rootfs.glob(SITE_PACKAGES)
                      for entry in site.iterdir() if entry.is_dir())
    packages.reverse()
    lines += [f"| …/site-packages/{name} | {megabytes(size)} |" for size, name in packages[:LARGEST_PACKAGES]]
    return "\n".join(lines) + "\n"


def record(path: Path, section: str) -> None:
    text = path.read_text()
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    if not rest:
        raise SystemExit(f"{path}: no {BEGIN} marker")
    path.write_text(f"{before}{BEGIN}\n{section}{END}{after}")


def main(arguments: list[str]) -> None:
    layout, rootfs, build_seconds, *record_file = arguments
    section = report(Path(layout), Path(rootfs), build_seconds)
    print(section, end="")
    if record_file and record_file[0]:
        record(Path(record_file[0]), section)


if __name__ == "__main__":
    main(sys.argv[1:])
