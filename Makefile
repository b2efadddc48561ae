# The two commands a newcomer needs: `make test` (installs what is missing, builds, runs
# every test) and `make crds` (regenerates deploy/crds from the Rust types).

APT_PACKAGES := frr bird2 gobgpd iproute2 nftables
KUBEENV      := target/kubeenv/kubeenv
KUBEENV_SRC  := $(wildcard testbed/kubeenv/*.go) testbed/kubeenv/go.mod testbed/kubeenv/go.sum
# A plain `go build` of Kubernetes reports v0.0.0-master; stamp the version as release builds do.
KUBE_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2}' testbed/kubeenv/go.mod)
KUBE_MINOR   := $(word 2,$(subst ., ,$(KUBE_VERSION)))
VERSION_PKG  := k8s.io/component-base/version
KUBEENV_LDFLAGS := -s -w -X $(VERSION_PKG).gitVersion=$(KUBE_VERSION) \
	-X $(VERSION_PKG).gitMajor=1 -X $(VERSION_PKG).gitMinor=$(KUBE_MINOR)

.PHONY: test deps kubeenv crds lint

test: deps kubeenv
	cargo test --workspace --locked

# Debian packages the network lab runs; installed only when one is missing.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The real control plane for tests (etcd, kube-apiserver, kube-controller-manager, kubectl).
kubeenv: $(KUBEENV)

$(KUBEENV): $(KUBEENV_SRC)
	cd testbed/kubeenv && CGO_ENABLED=0 go build -trimpath -ldflags='$(KUBEENV_LDFLAGS)' -o ../../$(KUBEENV) .

crds:
	cargo run -q -p purelb-api --bin crdgen

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# The whole path on this machine, left running: control plane, allocator, three node
# namespaces with lbnodeagent (embedded BGP), an FRR router and a client (scripts/demo.sh).
.PHONY: demo demo-down

demo: deps kubeenv
	cargo build --release --locked -p purelb-agent -p purelb-allocator --bin lbnodeagent --bin allocator
	scripts/demo.sh

demo-down:
	scripts/demo-down.sh
