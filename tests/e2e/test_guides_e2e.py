"""The signing guides in docs/guides/, run as written against a real registry, gpg, skopeo, cosign and notation.

The convention, which every guide states at its top:

- A fenced block opened with ```` ```sh {test} ```` is executed, in the order of the guide, by bash with
  `set -euo pipefail`, in one working directory per guide. Each block sees the variables exported by the
  blocks before it (and nothing else of their shell state).
- A fenced block opened with ```` ```text {expect} ```` (or ```` ```text {expect exit=N} ````) is the output of
  the executable block just before it: each of its non-empty lines must match an output line (stdout and
  stderr together), in order, where `...` stands for any text and `$NAME` for the value of an exported
  variable (`$REGISTRY`, or one a block exported). The block must exit with N (0 when not given).
- Every guide must have executable blocks, and expectations showing an image ADMITTED and one DENIED.

What the test supplies, and nothing else is rewritten:
- the values of the guide's set-up variables, through the environment: `REGISTRY` (a docker-registry on
  127.0.0.1 with TLS from a private CA), `LOOKASIDE` and `STAGING` (a web server on 127.0.0.1 publishing a
  directory), `SOURCE` (an OCI layout holding a small image), `COSIGN_PASSWORD`;
- `SSL_CERT_FILE` naming the private CA, which skopeo, cosign and notation trust through Go's TLS stack;
- a throw-away `HOME`, `GNUPGHOME`, `XDG_CONFIG_HOME` and `TMPDIR`; their gpg-agent is stopped at the end,
  and the test fails if any gpg process naming them is left behind;
- a `trustgate` command first on PATH that runs this checkout's trustgate with `--registry-ca <the CA>
  --allow-registry-cidr 127.0.0.1/32` added to `verify`, `explain` and `serve`: the only flags a registry on
  loopback needs that a production registry does not.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import infra

DOCS = infra.REPO_ROOT / "docs"
GUIDES = sorted((DOCS / "guides").glob("*.md"))
# Pages run the same way as the guides.
EXECUTED = [*GUIDES, DOCS / "cookbook.md"]
COSIGN_PASSWORD = "guide-password"
_FENCE = re.compile(r"^```(?P<language>\S*)[ \t]*(?:\{(?P<attributes>[^}]*)\})?[ \t]*\n(?P<body>.*?)^```[ \t]*$",
                    re.MULTILINE | re.DOTALL)
_VARIABLE = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)\}?")


class GuideError(ValueError):
    """A guide that breaks the convention: it could not be tested as written."""


@dataclass(frozen=True)
class Expectation:
    lines: tuple[str, ...]
    exit_status: int


@dataclass(frozen=True)
class Step:
    script: str
    line: int  # where the block starts in the guide, for messages
    expectation: Expectation | None


def _attributes(text: str | None) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for word in (text or "").split():
        name, _, value = word.partition("=")
        attributes[name] = value
    return attributes


def parse_guide(markdown: str) -> list[Step]:
    """The executable steps of a guide, each with the expected output that follows it."""
    steps: list[Step] = []
    for block in _FENCE.finditer(markdown):
        attributes = _attributes(block["attributes"])
        line = markdown.count("\n", 0, block.start()) + 1
        if "test" in attributes:
            if block["language"] != "sh":
                raise GuideError(f"line {line}: only sh blocks can be executed, not {block['language']!r}")
            steps.append(Step(block["body"], line, None))
        elif "expect" in attributes:
            if not steps or steps[-1].expectation is not None:
                raise GuideError(f"line {line}: an expect block must follow an executable block")
            try:
                status = int(attributes.get("exit") or 0)
            except ValueError:
                raise GuideError(f"line {line}: exit={attributes['exit']!r} is not a number") from None
            lines = tuple(text.strip() for text in block["body"].splitlines() if text.strip())
            steps[-1] = Step(steps[-1].script, steps[-1].line, Expectation(lines, status))
    if not steps:
        raise GuideError("no executable block (```sh {test}): the guide would go untested")
    shown = " ".join(line for step in steps if step.expectation for line in step.expectation.lines)
    for verdict in ("ADMITTED", "DENIED"):
        if verdict not in shown:
            raise GuideError(f"no expected output shows an image {verdict}")
    return steps


def _pattern(expected: str, variables: Mapping[str, str]) -> re.Pattern[str]:
    def literal(text: str) -> str:
        return re.escape(_VARIABLE.sub(lambda match: variables.get(match[1], match[0]), text))

    return re.compile(".*".join(literal(part) for part in expected.split("...")))


def unmatched(expected: tuple[str, ...], output: str, variables: Mapping[str, str]) -> str | None:
    """The first expected line not found, in order, among the output's lines; None when all are."""
    lines = iter(text.strip() for text in output.splitlines())
    for wanted in expected:
        pattern = _pattern(wanted, variables)
        if not any(pattern.fullmatch(text) for text in lines):
            return wanted
    return None


# --- the world a guide runs in ---------------------------------------------------------------------------


@dataclass
class GuideWorld:
    registry: infra.Registry
    lookaside: infra.Lookaside
    tls: infra.TlsFiles


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuideWorld]:
    base = tmp_path_factory.mktemp("guides")
    tls = infra.make_tls(base / "tls")
    registry = infra.start_registry(base / "registry", tls=tls)
    lookaside = infra.start_lookaside(base / "sigstore")
    try:
        yield GuideWorld(registry, lookaside, tls)
    finally:
        lookaside.stop()
        registry.stop()


def _trustgate_command(directory: Path, ca: Path) -> Path:
    """`trustgate` as the guides call it, with the two flags a loopback registry behind a private CA needs."""
    directory.mkdir()
    wrapper = directory / "trustgate"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  verify|explain|serve) command=$1; shift; exec {shlex.quote(sys.executable)} -m webhook "$command" '
        f'--registry-ca {shlex.quote(str(ca))} --allow-registry-cidr 127.0.0.1/32 "$@" ;;\n'
        f'  *) exec {shlex.quote(sys.executable)} -m webhook "$@" ;;\n'
        "esac\n")
    wrapper.chmod(0o755)
    return directory


def _environment(work: Path, world: GuideWorld, guide: str) -> dict[str, str]:
    homes = {name: work / directory for name, directory in (
        ("HOME", "home"), ("GNUPGHOME", "gnupg"), ("XDG_CONFIG_HOME", "config"), ("TMPDIR", "tmp"))}
    for home in homes.values():
        home.mkdir(mode=0o700)
    staging = world.lookaside.root / guide
    staging.mkdir()
    layout = infra.write_oci_layout(work / "build", seed=f"guide {guide}")
    commands = _trustgate_command(work / "commands", world.tls.ca)
    path = os.pathsep.join((str(commands), str(infra.TOOLS_BIN), os.environ.get("PATH", "")))
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(("COSIGN_", "NOTATION_"))},
        **{name: str(home) for name, home in homes.items()},
        "PATH": path,
        "REGISTRY": world.registry.host,
        "LOOKASIDE": f"{world.lookaside.url}/{guide}",
        "STAGING": str(staging),
        "SOURCE": f"oci:{layout}:latest",
        "COSIGN_PASSWORD": COSIGN_PASSWORD,
        "SSL_CERT_FILE": str(world.tls.ca),
    }


def _run(step: Step, work: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exported, environment_file = (shlex.quote(str(work / name)) for name in (".exported", ".environment"))
    # The environment is recorded before the block too, for expectations of a block that exits early.
    script = (f"set -euo pipefail\n. {exported}\nenv -0 > {environment_file}\n{step.script}\n"
              f"export -p > {exported}\nenv -0 > {environment_file}\n")
    return subprocess.run(["bash", "-c", script], cwd=work, env=environment, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300, check=False)


def _exported(work: Path) -> dict[str, str]:
    """The environment the last block ended with (or began with, when it stopped early)."""
    entries = (work / ".environment").read_bytes().decode().split("\0")
    return dict(entry.partition("=")[::2] for entry in entries if entry)


@pytest.mark.parametrize("guide", EXECUTED, ids=[guide.stem for guide in EXECUTED])
def test_guide_runs_as_written(guide: Path, world: GuideWorld, tmp_path: Path) -> None:
    steps = parse_guide(guide.read_text())
    work = tmp_path / "work"
    work.mkdir()
    (work / ".exported").touch()
    environment = _environment(work, world, guide.stem)
    try:
        for step in steps:
            completed = _run(step, work, environment)
            expectation = step.expectation or Expectation((), 0)
            where = f"{guide.name} line {step.line}"
            assert completed.returncode == expectation.exit_status, (
                f"{where}: exit status {completed.returncode}, expected {expectation.exit_status}:\n"
                f"{step.script}\n--- output ---\n{completed.stdout}")
            missing = unmatched(expectation.lines, completed.stdout, _exported(work))
            assert missing is None, f"{where}: expected {missing!r} in the output:\n{completed.stdout}"
    finally:
        subprocess.run([infra.tool("gpgconf"), "--homedir", environment["GNUPGHOME"], "--kill", "all"],
                       capture_output=True, check=False)
    assert infra.gpg_processes_naming(work) == []
    assert infra.trustgate_temporaries(Path(environment["TMPDIR"])) == []


# --- the convention itself ---------------------------------------------------------------------------------


def test_the_executed_pages_are_there_and_linked_from_the_readme() -> None:
    """A guide deleted or renamed fails here rather than silently dropping out of the parametrized test."""
    readme = (infra.REPO_ROOT / "README.md").read_text()
    assert [guide.name for guide in GUIDES] == ["cosign.md", "notation.md", "skopeo-gpg.md"]
    for page in EXECUTED:
        assert f"({page.relative_to(infra.REPO_ROOT)})" in readme


def test_a_guide_without_executable_blocks_is_refused() -> None:
    with pytest.raises(GuideError, match="no executable block"):
        parse_guide("# A guide\n\n```sh\ntrustgate verify --config trust app:1.0\n```\n\n"
                    "```text\nADMITTED app:1.0\n```\n")


def test_a_guide_must_show_an_admission_and_a_denial() -> None:
    with pytest.raises(GuideError, match="DENIED"):
        parse_guide("```sh {test}\ntrustgate verify app\n```\n```text {expect}\nADMITTED app\n```\n")


def test_an_expectation_belongs_to_an_executable_block() -> None:
    with pytest.raises(GuideError, match="must follow"):
        parse_guide("```text {expect}\nADMITTED app\n```\n```sh {test}\ntrue\n```\n")


def test_expected_lines_must_appear_in_order() -> None:
    output = "ADMITTED 127.0.0.1:5000/app:1.0 (sha256:abc)\n  policy team: 1 of 1 authorities passed\n"
    variables = {"REGISTRY": "127.0.0.1:5000"}
    assert unmatched(("ADMITTED $REGISTRY/app:1.0 (sha256:...)", "policy team: ..."), output, variables) is None
    assert unmatched(("policy team: ...", "ADMITTED ..."), output, variables) == "ADMITTED ..."
    assert unmatched(("DENIED $REGISTRY/app:1.0 ...",), output, variables) == "DENIED $REGISTRY/app:1.0 ..."
    assert unmatched(("ADMITTED $REGISTRY/app:1.0",), output, variables) == "ADMITTED $REGISTRY/app:1.0"
