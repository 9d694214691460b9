# agent-mesh: `make demo` runs a local mesh, `make test` runs every test suite.
# Both install what they need on first use: a venv in .venv, then the Go-built control
# plane (etcd, kube-apiserver, kubectl) cached by version under ~/.cache/agent-mesh.
# `make test` also brings up a node for the tests that need pods (as root): the Debian
# packages it needs, its Go-built binaries and its offline-built images (docs/devcluster.md).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MESH   := $(VENV)/bin/agent-mesh
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# What a node needs from Debian (docs/devcluster.md says why these come from Debian); strace
# traces the local tailnet's processes (the tailscale tests prove nothing leaves the machine).
NODE_PACKAGES := runc containernetworking-plugins iptables iproute2 mmdebstrap buildah strace

.DEFAULT_GOAL := help
.PHONY: help demo test test-loaded test-unit test-integration test-e2e test-smoke test-disruptive test-fault test-helm test-rbac-proof test-packaging test-node lint crds manifests binaries tailnet node-deps node venv clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[operator,dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv: the package with its operator extra and the dev tools

binaries: venv ## build (first time) the local control plane's binaries
	@if [ -n "$$KUBECONFIG" ]; then echo "KUBECONFIG is set: using that cluster, building nothing"; \
	else $(MESH) dev build --no-node >/dev/null; fi

tailnet: venv ## build (first time) the local tailnet's binaries (Tailscale, headscale) for the tests marked tailscale
	@$(MESH) dev build --no-node --tailnet >/dev/null

node-deps: ## (root) install the Debian packages a local node needs, when missing
	@if [ -n "$$KUBECONFIG" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "make: not root: no local node (the node tests are skipped)"; exit 0; fi; \
	if ! command -v dpkg-query >/dev/null; then echo "make: not a Debian system: install $(NODE_PACKAGES) yourself"; exit 0; fi; \
	missing=""; for p in $(NODE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  command -v apt-get >/dev/null || { echo "make: the node needs Debian packages:$$missing, and there is no apt-get" >&2; exit 1; }; \
	  echo "make: installing Debian packages for the node:$$missing"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
	    || { echo "make: apt-get install$$missing failed" >&2; exit 1; }; \
	fi

node: binaries node-deps ## build (first time) the node's binaries and images (as root)
	@if [ -z "$$KUBECONFIG" ] && [ "$$(id -u)" = 0 ]; then $(MESH) dev build >/dev/null; fi

demo: binaries ## a local mesh: control plane, CRDs, operator, samples (Ctrl-C stops it)
	$(MESH) demo

test: binaries tailnet node ## every test suite (unit, integration, e2e, node) against a real cluster
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; exit 1; fi; exit $$rc

test-loaded: ## make test three times in a row with one core kept busy by a CPU burner; prints each run's summary
	@.ci/test-loaded

test-unit: venv ## pure logic only, no cluster
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: binaries tailnet ## components against the real apiserver
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-e2e: binaries ## the operator and CLI driven the way a user drives them
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

test-smoke: binaries ## the few tests that show the product works at all (run them first)
	$(PY) -m pytest -m smoke $(PYTEST_ARGS)

test-disruptive: binaries ## every fault test and planned stop: processes killed or stopped mid-work
	$(PY) -m pytest -m disruptive $(PYTEST_ARGS)

FAULTS = $(shell sed -n 's/^ *"fault_\([a-z_]*\):.*/\1/p' pyproject.toml)
test-fault: binaries ## one fault class: make test-fault FAULT=operator_killed
	@case " $(FAULTS) " in *" $(FAULT) "*) ;; \
	*) echo "make test-fault FAULT=<class>, one of: $(FAULTS)" >&2; exit 2;; esac
	$(PY) -m pytest -m fault_$(FAULT) $(PYTEST_ARGS)

test-helm: binaries ## the Helm chart and config/: lint, template, schema, drift, server-side dry run
	$(PY) -m pytest -m helm $(PYTEST_ARGS)

test-rbac-proof: node ## (root) remove each of the chart's RBAC rules in turn on the node: each must break the flow
	AGENT_MESH_RBAC_PROOF=1 $(PY) -m pytest -m rbac_proof $(PYTEST_ARGS)

test-packaging: binaries ## fresh venvs from the package index: the SDK alone, the dependency floors
	$(PY) -m pytest -m packaging $(PYTEST_ARGS)

test-node: node ## the tests that need pods: a node beside the control plane (root)
	$(PY) -m pytest -m node $(PYTEST_ARGS)

lint: venv ## ruff, mypy --strict, import-linter layer contracts
	$(VENV)/bin/ruff check operator tests bench examples
	$(VENV)/bin/ruff format --check operator tests bench examples
	$(VENV)/bin/mypy
	MYPYPATH=operator $(VENV)/bin/mypy --strict examples
	$(VENV)/bin/mypy --strict bench/*.py bench/common bench/transport bench/tasks
	$(VENV)/bin/lint-imports

crds: venv ## regenerate crds/*.yaml and the chart's copy from the API models
	$(MESH) crds --write --dir crds
	$(MESH) crds --write --dir charts/agent-mesh/crds

manifests: crds ## regenerate config/{crd,rbac,manager,default} and docs/helm.md's values table from the Helm chart
	$(MESH) manifests --write --dir config

clean: ## remove the venv and caches (not the built binaries)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
