# trustgate: `make run` serves the example configuration, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: run test unit e2e e2e-cluster bench bench-scale lint crds chart deps venv clean reliability fuzz soak soak-cluster

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || (apt-get update -qq && apt-get install -y -qq python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/trustgate serve --config examples/config --port 8443

deps:
	scripts/install-test-deps.sh
	scripts/install-kube-tools.sh

test: deps $(STAMP) lint
	$(BIN)/pytest tests --ignore=tests/cluster --ignore=tests/image

unit: $(STAMP)
	$(BIN)/pytest tests/unit

e2e: deps $(STAMP)
	$(BIN)/pytest tests/e2e

# A real kube-apiserver 1.20 + etcd on 127.0.0.1 (the build takes about 5 minutes once per machine).
e2e-cluster: deps $(STAMP)
	scripts/build-kube-apiserver.sh
	$(BIN)/pytest tests/cluster

# Benchmarks against real components (about 10 minutes); writes bench/RESULTS.md. Not part of `make test`.
bench: $(STAMP)
	scripts/install-bench-deps.sh
	$(BIN)/python -m bench

# 1,000 TrustPolicies over 100 TrustStores against one policy (a few minutes); writes its section of
# bench/RESULTS.md. Not part of `make test`.
bench-scale: $(STAMP)
	scripts/install-bench-deps.sh
	$(BIN)/python -m bench.scale

# The container image from the Dockerfile, built without an image registry (buildah, bases made from Debian
# packages): writes build/image, an OCI layout, dist/trustgate-image-VERSION.oci.tar, the same image as the one
# file an air-gapped install starts from, and the measured section of docs/image.md. About 25 s; 65 s when the
# bases are made anew.
.PHONY: image e2e-image
image:
	scripts/build-image.sh --record docs/image.md --oci-archive dist/trustgate-image-$(VERSION).oci.tar

# The image pushed to a real registry, signed with GPG, cosign and Notation, run: trustgate admits its own image.
e2e-image: deps $(STAMP)
	$(BIN)/pytest tests/image

lint: $(STAMP)
	$(BIN)/ruff check webhook controller tests bench scripts
	$(BIN)/mypy

# Campaigns that regenerate docs/reliability.md: e2e faults and attack corpus, long fuzzing, soak under faults.
reliability: deps $(STAMP)
	$(BIN)/python scripts/reliability.py faults

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} $(BIN)/python scripts/reliability.py fuzz

soak: deps $(STAMP)
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(BIN)/python scripts/reliability.py soak

# On the real API server: outage, replica convergence, then SOAK_CLUSTER_SECONDS of policy churn under load.
soak-cluster: deps $(STAMP)
	scripts/build-kube-apiserver.sh
	SOAK_CLUSTER_SECONDS=$${SOAK_CLUSTER_SECONDS:-600} $(BIN)/python scripts/reliability.py soak-cluster

crds: $(STAMP)
	$(BIN)/python -m controller.crds crds charts/trustgate/crds

# The chart tarball an air-gapped install starts from: dist/trustgate-VERSION.tgz.
chart:
	scripts/install-kube-tools.sh
	.tools/bin/helm lint --strict charts/trustgate
	.tools/bin/helm package charts/trustgate --destination dist

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist
