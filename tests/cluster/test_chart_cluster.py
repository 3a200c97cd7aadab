"""The chart installed, upgraded and uninstalled on a real API server, following the README's air-gapped
walkthrough inside a network namespace where only the private registry and the API server exist.

The walkthrough itself (and what it adapts for a 1.20 API server without a kubelet) is in airgap.py; it runs
as its own process under `unshare --net`, so that nothing it starts can reach anything but loopback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e import infra

WALKTHROUGH_TIMEOUT = 600
IMAGE_BUILD_TIMEOUT = 900


def test_air_gapped_install_upgrade_and_uninstall(tmp_path: Path) -> None:
    # Built before the network goes away, as the admin does on a machine with access: the image archive the
    # walkthrough carries into the air gap.
    image_archive = tmp_path / "trustgate-image.oci.tar"
    subprocess.run([str(infra.REPO_ROOT / "scripts" / "build-image.sh"), "--oci-layout", str(tmp_path / "image"),
                    "--oci-archive", str(image_archive)], check=True, timeout=IMAGE_BUILD_TIMEOUT)
    command = [infra.tool("unshare"), "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               sys.executable, "-m", "tests.cluster.airgap", str(tmp_path / "walkthrough"), str(image_archive)]
    # The walkthrough's own servers are in its process group, stopped whole if it overruns.
    completed = infra.run_process_group(command, WALKTHROUGH_TIMEOUT, stderr=subprocess.STDOUT)
    text = completed.stdout.decode(errors="replace")
    print(text)
    assert completed.returncode == 0, text[-8000:]
    assert "== walkthrough passed" in text
