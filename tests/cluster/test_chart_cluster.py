"""The chart installed, upgraded and uninstalled on a real API server, following the README's air-gapped
walkthrough inside a network namespace where only the private registry and the API server exist.

The walkthrough itself (and what it adapts for a 1.20 API server without a kubelet) is in airgap.py; it runs
as its own process under `unshare --net`, so that nothing it starts can reach anything but loopback.
"""

from __future__ import annotations

import os
import signal
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
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=infra.REPO_ROOT,
                               env={**os.environ, "PATH": f"{infra.TOOLS_BIN}{os.pathsep}{os.environ['PATH']}"},
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=WALKTHROUGH_TIMEOUT)
    except subprocess.TimeoutExpired:
        # The walkthrough's own servers are in its process group: stop them all.
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate()
    text = output.decode(errors="replace")
    print(text)
    assert process.returncode == 0, text[-8000:]
    assert "== walkthrough passed" in text
