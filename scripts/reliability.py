"""Run the reliability campaigns and regenerate docs/reliability.md from their figures.

    python scripts/reliability.py faults   # registry faults, SSRF cases and the attack corpus (e2e)
    python scripts/reliability.py fuzz     # property tests with FUZZ_EXAMPLES examples each (default 5000)
    python scripts/reliability.py soak     # SOAK_SECONDS of load with random faults (default 600)
    python scripts/reliability.py soak-cluster  # API server outage, replica convergence, then SOAK_CLUSTER_SECONDS
                                                # of policy churn under load (default 600), on the real API server
    python scripts/reliability.py render   # only rewrite the page from the recorded figures

Each campaign records its figures in docs/reliability-figures.json; the page is rewritten from all of them, so a
figure always comes from the last run of its command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "reliability-figures.json"
PAGE = ROOT / "docs" / "reliability.md"
PYTHON = sys.executable

FAULT_MODULES = ("tests/e2e/test_faults_e2e.py", "tests/e2e/test_ssrf_e2e.py")

# Each attack of the corpus and the end-to-end tests that show it denied with its reason.
CORPUS: dict[str, tuple[str, ...]] = {
    "signature replayed from another image": (
        "tests/e2e/test_gpg_e2e.py::test_signature_filed_under_another_digest_is_denied",
        "tests/e2e/test_cosign_e2e.py::test_signature_of_image_a_filed_under_image_b_is_denied",
        "tests/e2e/test_notation_e2e.py::test_signature_of_another_image_is_denied"),
    "signature replayed from another repository": (
        "tests/e2e/test_gpg_e2e.py::test_image_and_signature_copied_to_another_repository_are_denied",
        "tests/e2e/test_cosign_e2e.py::test_signature_copied_to_another_repository_is_denied_unless_the_rule_allows_it"),
    "digest mismatch": (
        "tests/e2e/test_faults_e2e.py::test_registry_fault_denies_with_its_reason[bytes not hashing to the digest]",
        "tests/e2e/test_faults_e2e.py::test_a_header_never_names_the_digest"),
    "unanchored wildcard": ("tests/e2e/test_corpus_e2e.py::test_policy_globs_are_anchored",),
    "forged verdict annotation, fabricated ownerReference, init container": (
        "tests/e2e/test_corpus_e2e.py::test_forged_verdicts_owner_references_and_init_containers_are_no_evidence",),
    "ephemeral container": ("tests/e2e/test_policy_e2e.py::test_workloads_and_ephemeral_containers_are_checked",),
    "duplicate signatures towards a quorum": ("tests/e2e/test_policy_e2e.py::test_min_signatures_needs_distinct_keys",),
    "revoked key": ("tests/e2e/test_policy_e2e.py::test_revoked_key_is_refused_at_once",
                    "tests/e2e/test_notation_e2e.py::test_revoked_leaf_is_denied_by_the_crl_in_the_trust_store"),
    "expired key": ("tests/e2e/test_corpus_e2e.py::test_signature_by_an_expired_key_is_refused",),
    "subkey of an untrusted primary": (
        "tests/e2e/test_corpus_e2e.py::test_signature_by_a_subkey_of_an_untrusted_primary_is_refused",),
    "unknown critical payload field": ("tests/e2e/test_corpus_e2e.py::test_unknown_critical_field_is_refused",),
    "duplicate JSON keys in the payload": (
        "tests/e2e/test_corpus_e2e.py::test_duplicate_json_keys_in_the_payload_are_refused",),
    "manifest list whose child is swapped": (
        "tests/e2e/test_corpus_e2e.py::test_index_with_a_swapped_child_does_not_keep_the_signature",
        "tests/e2e/test_cosign_e2e.py::test_index_signed_at_the_top_does_not_cover_a_child_used_directly"),
    "tag moved between mutate and validate": (
        "tests/e2e/test_policy_e2e.py::test_mutate_pins_the_verified_digest_and_a_moved_tag_cannot_swap_the_image",),
    "oversized or endless signature lists": (
        "tests/e2e/test_corpus_e2e.py::test_endless_signature_list_is_cut_at_the_cap",
        "tests/e2e/test_corpus_e2e.py::test_oversized_signature_is_refused"),
    "a registry that answers slowly byte by byte": (
        "tests/e2e/test_faults_e2e.py::test_registry_fault_denies_with_its_reason[byte-by-byte trickle]",
        "tests/e2e/test_faults_e2e.py::test_serve_denies_on_registry_faults_and_never_answers_500"),
}


def load_figures() -> dict[str, Any]:
    return json.loads(FIGURES.read_text()) if FIGURES.exists() else {}


def save_figures(section: str, figures: dict[str, Any]) -> None:
    recorded = load_figures()
    recorded[section] = {**figures, "recorded": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    FIGURES.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")


def pytest_outcomes(*targets: str, env: dict[str, str] | None = None) -> dict[str, bool]:
    """Run pytest on `targets`; node id -> passed."""
    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "report.xml"
        subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *targets],
                       cwd=ROOT, env={**os.environ, **(env or {})}, check=False)
        outcomes: dict[str, bool] = {}
        for case in ElementTree.parse(report).iter("testcase"):
            module = case.get("classname", "").replace(".", "/") + ".py"
            passed = not any(child.tag in ("failure", "error", "skipped") for child in case)
            outcomes[f"{module}::{case.get('name')}"] = passed
    return outcomes


def run_faults() -> bool:
    corpus_tests = sorted({test for tests in CORPUS.values() for test in tests})
    outcomes = pytest_outcomes(*FAULT_MODULES, "tests/e2e/test_corpus_e2e.py", *corpus_tests)
    faults = {test: passed for test, passed in outcomes.items() if test.startswith(FAULT_MODULES)}
    def passed(test: str) -> bool:
        """A test id without parameters stands for all of its parametrized cases."""
        cases = [ok for node, ok in outcomes.items() if node == test or node.startswith(f"{test}[")]
        return bool(cases) and all(cases)

    corpus = {attack: all(passed(test) for test in tests) for attack, tests in CORPUS.items()}
    save_figures("faults", {"survived": sum(faults.values()), "cases": len(faults), "tests": faults})
    save_figures("corpus", {"denied": sum(corpus.values()), "attacks": len(corpus), "results": corpus})
    return all(faults.values()) and all(corpus.values())


def run_fuzz() -> bool:
    examples = os.environ.get("FUZZ_EXAMPLES", "5000")
    with tempfile.TemporaryDirectory() as directory:
        counts_file = Path(directory) / "counts.json"
        outcomes = pytest_outcomes("tests/unit/test_properties.py",
                                   env={"FUZZ_EXAMPLES": examples, "FUZZ_FIGURES": str(counts_file)})
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    save_figures("fuzz", {"examplesPerProperty": int(examples), "inputs": sum(counts.values()),
                          "targets": counts, "propertiesPassed": sum(outcomes.values()),
                          "properties": len(outcomes)})
    return bool(outcomes) and all(outcomes.values())


def run_soak() -> bool:
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "soak.json"
        completed = subprocess.run([PYTHON, "-m", "tests.soak", "--output", str(output)], cwd=ROOT, check=False)
        if output.exists():
            save_figures("soak", json.loads(output.read_text()))
    return completed.returncode == 0


CLUSTER_TESTS = (
    "tests/cluster/test_reliability_cluster.py::test_webhooks_ride_out_an_api_server_outage_and_follow_changes_made_after_it",
    "tests/cluster/test_reliability_cluster.py::test_replicas_converge_on_each_new_generation_within_the_bound",
)


def run_soak_cluster() -> bool:
    seconds = os.environ.get("SOAK_CLUSTER_SECONDS", "600")
    with tempfile.TemporaryDirectory() as directory:
        measured_file, churn_file = Path(directory) / "measured.json", Path(directory) / "churn.json"
        outcomes = pytest_outcomes(*CLUSTER_TESTS, env={"CLUSTER_FIGURES": str(measured_file)})
        measured = json.loads(measured_file.read_text()) if measured_file.exists() else {}
        completed = subprocess.run([PYTHON, "-m", "tests.cluster.churn", "--seconds", seconds, "--output",
                                    str(churn_file)], cwd=ROOT, check=False)
        churn = json.loads(churn_file.read_text()) if churn_file.exists() else None
    save_figures("cluster", {"outage": measured.get("outage"), "convergence": measured.get("convergence"),
                             "churn": churn, "tests": outcomes})
    return bool(outcomes) and all(outcomes.values()) and completed.returncode == 0


def render_cluster(cluster: dict[str, Any]) -> list[str]:
    """The section on the real API server: outage, convergence, churn."""
    lines = ["", "## On the real API server", "",
             "`make soak-cluster` runs, against a real kube-apiserver 1.20 and etcd on 127.0.0.1, the outage and",
             "convergence tests of `tests/cluster/test_reliability_cluster.py` and then `tests/cluster/churn.py` for",
             "`SOAK_CLUSTER_SECONDS` (default 600); `make e2e-cluster` runs the same with a 60-second churn. Every",
             "AdmissionReview goes straight to a webhook replica, and its verdict must be the one of the policy",
             "generation its answer reports (the `policy-generation` audit annotation).", "",
             "- Outage: the API server is stopped (etcd keeps running) for 30 s and started again on the same port",
             "  with the same flags. A running replica keeps answering from its last bundle; a replica started",
             "  during the outage is not ready and denies every review until it has a bundle; the controller",
             "  reconnects by itself; a TrustPolicy created after the restart is enforced by every replica.",
             "- Convergence: three replicas follow one bundle; the probe TrustPolicy changes 20 times; every replica",
             "  must serve each new generation within the bound, and no answer may come from a generation older than",
             "  the one published the bound before it.",
             "- Churn: the probe TrustStore and TrustPolicy both change every second while reviews arrive at a steady",
             "  rate; no error, no verdict other than its generation's, webhook RSS growth under 10% after warm-up,",
             "  open file descriptors and gpg homes flat, no gpg process, nothing left behind.", ""]
    if not cluster:
        return [*lines, "Not run yet."]
    lines.append(f"Last run ({cluster['recorded']}): tests "
                 + ", ".join(f"`{test.split('::', 1)[1]}` {'pass' if ok else 'FAILED'}"
                             for test, ok in sorted(cluster["tests"].items())) + ".")
    lines += ["", "| figure | value |", "| --- | --- |"]
    outage, convergence, churn = cluster.get("outage"), cluster.get("convergence"), cluster.get("churn")
    if outage:
        lines += [f"| outage | {outage['outageSeconds']:g} s, {outage['reviewsDuringOutage']} reviews answered from "
                  "the last bundle |",
                  f"| API server back to the new TrustPolicy's bundle published | "
                  f"{outage['apiBackToPublishedSeconds']:g} s |",
                  f"| API server back to every replica enforcing it | {outage['apiBackToEnforcedSeconds']:g} s |"]
    if convergence:
        publish, converge = convergence["changeToPublishedSeconds"], convergence["publishedToAllReplicasSeconds"]
        lines += [f"| TrustPolicy change to bundle published ({convergence['changes']} changes) | "
                  f"p50 {publish['p50']:g} s, max {publish['max']:g} s |",
                  f"| bundle published to all {convergence['replicas']} replicas enforcing it | "
                  f"p50 {converge['p50']:g} s, max {converge['max']:g} s (bound {convergence['boundSeconds']:g} s) |"]
    if churn:
        lines += [f"| churn: duration, changes, generations | {churn['seconds']} s, {churn['changes']} changes of "
                  f"store and policy, {churn['generations']} bundle generations |",
                  f"| churn: reviews | {churn['reviews']} ({churn['admitted']} admitted, {churn['denied']} denied), "
                  f"{churn['errors']} errors, {churn['problemCount']} verdicts not matching their generation |",
                  f"| churn: webhook RSS | {churn['rss']['afterWarmUpKiB']} KiB after warm-up, "
                  f"{churn['rss']['atEndKiB']} KiB at the end ({churn['rssGrowth'] * 100:+.1f}%) |",
                  f"| churn: webhook open files, gpg homes (after warm-up, end, max) | "
                  f"{churn['fds']['afterWarmUp']}, {churn['fds']['atEnd']}, {churn['fds']['max']}; "
                  f"{churn['gpgHomes']['afterWarmUp']}, {churn['gpgHomes']['atEnd']}, {churn['gpgHomes']['max']} |",
                  f"| churn: controller RSS, open files (after warm-up, end) | "
                  f"{churn['controllerRss']['afterWarmUpKiB']} KiB, {churn['controllerRss']['atEndKiB']} KiB; "
                  f"{churn['controllerFds']['afterWarmUp']}, {churn['controllerFds']['atEnd']} |",
                  f"| churn: passed | {'yes' if churn['passed'] else 'NO'} |"]
    return lines


def render() -> None:
    figures = load_figures()
    lines = [
        "# Reliability and security hardening",
        "",
        "<!-- Generated by scripts/reliability.py from docs/reliability-figures.json: edit the script, not this"
        " page. -->",
        "",
        "Pod specs and registries are attacker-controlled input. trustgate fails closed on every fault, bounds the",
        "work any input can cause, contacts only what policies and flags allow, and never sends or logs credentials",
        "where they do not belong. The figures below come from the last run of each command.",
        "",
        "| figure | value | command |",
        "| --- | --- | --- |",
    ]
    faults, corpus, fuzz, soak, cluster = (figures.get(name, {}) for name in
                                           ("faults", "corpus", "fuzz", "soak", "cluster"))
    lines.append(f"| registry faults and SSRF cases survived | {faults.get('survived', '-')} of "
                 f"{faults.get('cases', '-')} | `make reliability` |")
    lines.append(f"| attack corpus cases denied | {corpus.get('denied', '-')} of {corpus.get('attacks', '-')} |"
                 " `make reliability` |")
    lines.append(f"| inputs fuzzed | {fuzz.get('inputs', '-')} over {len(fuzz.get('targets', {})) or '-'} targets |"
                 " `make fuzz` |")
    if soak:
        lines.append(f"| soak: reviews, errors, memory growth | {soak['reviews']} reviews in {soak['seconds']:g} s, "
                     f"{soak['errors']} errors, RSS {soak['rssGrowth'] * 100:+.1f}% after warm-up |"
                     " `make soak` |")
    else:
        lines.append("| soak | not run yet | `make soak` |")
    churn = cluster.get("churn")
    if churn:
        lines.append(f"| policy churn on the real API server | {churn['reviews']} reviews in {churn['seconds']} s with "
                     f"{churn['changes']} policy changes, {churn['errors'] + churn['problemCount']} errors or "
                     f"mismatches, RSS {churn['rssGrowth'] * 100:+.1f}% after warm-up | `make soak-cluster` |")
    else:
        lines.append("| policy churn on the real API server | not run yet | `make soak-cluster` |")
    lines += ["", "## Fail closed, on time", "",
              "Every verification has a deadline (`--deadline`, default 9 s of the API server's 10); on the deadline,",
              "an error or an exception the image is denied with the reason. `/validate` and `/mutate` never answer",
              "500: a malformed AdmissionReview gets 400 with a message, a body over 3 MiB is refused. Digests and",
              "sizes a registry states in headers are never trusted: bytes are hashed and counted. `serve` drains",
              "reviews in flight on SIGTERM before it exits.", "",
              "Each fault below is served by the hostile registry of `tests/e2e/hostile.py` and checked end to end",
              "through `trustgate verify` (and `serve` where the answer differs):", "",
              "| case | result |", "| --- | --- |"]
    for test, passed in sorted(faults.get("tests", {}).items()):
        lines.append(f"| `{test.split('::', 1)[1]}` ({Path(test.split('::')[0]).stem}) | "
                     f"{'pass' if passed else 'FAILED'} |")
    lines += ["", "## Bounded work", "",
              "| limit | default | flag |", "| --- | --- | --- |",
              "| manifest and blob size | 4 MiB | - |",
              "| signature and payload size | 64 KiB (lookaside), 1 MiB (Notation envelope) | - |",
              "| signatures read per source and image | 16 (32 for cosign `.sig` tags) |"
              " `--max-signatures-per-source` |",
              "| entries of an image index | 64 | `--max-index-children` |",
              "| redirects per request | 3 | - |",
              "| JSON nesting | 32 (manifests, payloads), 100 (AdmissionReviews) | - |",
              "| AdmissionReview body | 3 MiB | - |",
              "| images per object (containers and image volumes) | 64 | `--max-containers-per-pod` (serve) |",
              "| verification time per image | 9 s | `--deadline` |",
              "", "## SSRF and credentials", "",
              "- An image no TrustPolicy matches is decided without any network call; the registry client refuses",
              "  any registry no policy's `images` (or an authority's signatures repository) covers.",
              "- Every connection is checked where it is made: the client's resolver resolves the name once and hands",
              "  on only permitted addresses, and its socket factory checks every socket (IP-literal hosts included),",
              "  refusing loopback, link-local, cloud metadata (169.254.169.254, fd00:ec2::254, 100.100.100.200,",
              "  168.63.129.16), unspecified and multicast addresses (also inside IPv4-mapped and NAT64 IPv6",
              "  addresses); the address checked is the one connected to, so DNS rebinding cannot slip past.",
              "  `--allow-registry-cidr CIDR` (repeatable) allows an address range explicitly, for a registry on the",
              "  node or in a lab.",
              "- Redirects are followed only to the same origin or to a host the admin named for that registry",
              "  (`--registry-delegate REGISTRY=HOST`, e.g. blob storage), never from HTTPS to HTTP, and without the",
              "  registry's `Authorization` header unless the origin is the same. Docker Hub's token service and blob",
              "  storage are built-in delegates of `docker.io`.",
              "- Registry credentials go only to the registry they name, and to its token service only when that",
              "  service is on the registry's host or a delegate. Neither credentials nor tokens are logged, even at",
              "  `--log-level debug` (a test scans the output for them).",
              "", "## Attack corpus", "",
              "| attack | denied | tests |", "| --- | --- | --- |"]
    for attack, tests in CORPUS.items():
        result = corpus.get("results", {}).get(attack)
        status = "-" if result is None else "yes" if result else "FAILED"
        names = "<br>".join(f"`{Path(test.split('::')[0]).stem}::{test.split('::', 1)[1]}`" for test in tests)
        lines.append(f"| {attack} | {status} | {names} |")
    lines += ["", "## Fuzzing", "",
              "`tests/unit/test_properties.py` holds hypothesis properties over every parser of attacker input: each",
              "input is accepted or refused with the parser's own error, never another exception. The normal suite",
              "runs them with a few dozen examples; `make fuzz` with `FUZZ_EXAMPLES` (default 5000) each. A crash",
              "found becomes a regression test at the end of that file.", ""]
    if fuzz:
        lines += [f"Last run: {fuzz['propertiesPassed']} of {fuzz['properties']} properties held, "
                  f"{fuzz['examplesPerProperty']} examples per property ({fuzz['recorded']}).", "",
                  "| target | inputs |", "| --- | --- |"]
        lines += [f"| {target} | {count} |" for target, count in fuzz["targets"].items()]
    lines += ["", "## Soak", "",
              "`make soak` (`SOAK_SECONDS`, default 600) serves AdmissionReviews from 8 workers (a signed image, an",
              "unsigned one, one no policy covers, malformed bodies) while a chaos front answers a quarter of the",
              "registry requests with a random fault. It fails if an unsigned image is ever admitted, if the webhook",
              "answers anything but 200 (or 400 to a malformed body), or if its RSS grows by 10% or more after",
              "warm-up.", ""]
    if soak:
        lines += [f"Last run ({soak['recorded']}): {soak['reviews']} reviews in {soak['seconds']:g} s: "
                  f"{soak['admitted']} admitted, {soak['denied']} denied, {soak['badRequests']} malformed bodies "
                  f"answered 400, {soak['errors']} errors; RSS {soak['rss']['afterWarmUpKiB']} KiB after warm-up, "
                  f"{soak['rss']['atEndKiB']} KiB at the end ({soak['rssGrowth'] * 100:+.1f}%). Faults injected: "
                  + ", ".join(f"{name} {count}" for name, count in soak["faultsInjected"].items()) + "."]
    lines += render_cluster(cluster)
    PAGE.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    runners = {"faults": run_faults, "fuzz": run_fuzz, "soak": run_soak, "soak-cluster": run_soak_cluster}
    command = argv[0] if argv else "render"
    if command not in (*runners, "render"):
        print(__doc__, file=sys.stderr)
        return 2
    passed = runners[command]() if command in runners else True
    render()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
