"""Node-side mirrors where the upstream cannot be reached at all: run inside a network namespace of its own.

`python -m tests.e2e.mirror_netns SPEC.json` is started by test_mirrors_e2e.py under `unshare --net --mount`,
after `lo` is brought up and a private /etc/hosts is bind-mounted that maps the upstream's host name to a
canary address. Here it serves the mirror (a docker-registry over the storage the test populated, and the
mirror's lookaside), listens as the canary where the upstream would be, runs `trustgate verify` and
`trustgate serve` (one /mutate per image) with the mirror flags, then `verify` once per image without them,
and prints what it observed as one JSON line for the test to judge. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import sys
from pathlib import Path
from typing import Any

from tests.e2e import infra
from tests.e2e.conftest import admission_review, verify, webhook_process


def interfaces() -> list[str]:
    # /proc/self/net follows the process's network namespace (/sys/class/net shows the one sysfs was mounted in).
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines)


def observe(spec: dict[str, Any]) -> dict[str, Any]:
    work, config = Path(spec["work"]), Path(spec["config"])
    upstream, canary_address, images = spec["upstream"], spec["canaryAddress"], spec["images"]
    # The upstream is named without a port: trustgate would reach it over HTTPS on 443.
    observed: dict[str, Any] = {"interfaces": interfaces(),
                                "upstreamResolvesTo": socket.gethostbyname(upstream)}
    with contextlib.ExitStack() as stack:
        canary = infra.Canary(443, canary_address)
        stack.callback(canary.close)
        mirror = infra.start_registry(work / "mirror", storage=Path(spec["mirrorStorage"]))
        stack.callback(mirror.stop)
        mirror_sigs = infra.start_lookaside(Path(spec["mirrorLookaside"]))
        stack.callback(mirror_sigs.stop)
        # The canary's address must pass the registry address check, or a direct attempt would be refused
        # before it was made and the control below could not see it.
        allow_canary = ("--allow-registry-cidr", f"{canary_address}/32")
        mirror_flags = ("--registry-mirror", f"{spec['upstreamPrefix']}={mirror.host}/{spec['mirrorPath']}",
                        "--registry-mirror-lookaside", f"{mirror.host}/{spec['mirrorPath']}={mirror_sigs.url}")

        mirrored = verify(config, mirror, *images, extra=(*allow_canary, *mirror_flags))
        observed["mirrored"] = {"returncode": mirrored.returncode, "result": mirrored.json(),
                                "canary": canary.connections}

        patches: dict[str, Any] = {}
        with webhook_process(work / "serve", config, mirror, *allow_canary, *mirror_flags) as webhook:
            for index, image in enumerate(images):
                answer = webhook.client.post("/mutate", json=admission_review(f"netns-{index}", image)).json()
                response = answer["response"]
                patches[image] = {"allowed": response["allowed"], "patch": json.loads(
                    base64.b64decode(response["patch"])) if "patch" in response else None}
        observed["mutate"] = {"patches": patches, "canary": canary.connections}

        direct: dict[str, Any] = {}
        for image in images:
            before = canary.connections
            run = verify(config, mirror, image, extra=allow_canary)
            direct[image] = {"returncode": run.returncode, "result": run.json(),
                             "attempts": canary.connections - before}
        observed["direct"] = direct
    return observed


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(observe(spec)), flush=True)


if __name__ == "__main__":
    main()
