# The two commands a newcomer needs: `make test` (installs what is missing, builds, runs
# every test) and `make crds` (regenerates deploy/crds from the Rust types).

APT_PACKAGES := frr bird2 gobgpd iproute2 nftables containerd runc containernetworking-plugins conntrack
KUBEENV      := target/kubeenv/kubeenv
KUBEENV_SRC  := $(wildcard testbed/kubeenv/*.go) testbed/kubeenv/go.mod testbed/kubeenv/go.sum
# A plain `go build` of Kubernetes reports v0.0.0-master; stamp the version as release builds do.
KUBE_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2}' testbed/kubeenv/go.mod)
KUBE_MINOR   := $(word 2,$(subst ., ,$(KUBE_VERSION)))
VERSION_PKG  := k8s.io/component-base/version
KUBEENV_LDFLAGS := -s -w -X $(VERSION_PKG).gitVersion=$(KUBE_VERSION) \
	-X $(VERSION_PKG).gitMajor=1 -X $(VERSION_PKG).gitMinor=$(KUBE_MINOR)

.PHONY: test deps kubeenv images crds lint

test: deps kubeenv images
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

# The lab's small static helper: the pause and web images' binary.
LABPOD := target/labpod/labpod
$(LABPOD): testbed/labpod/main.go testbed/labpod/go.mod
	cd testbed/labpod && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o ../../$(LABPOD) .

# The images as OCI archives in target/images/ (no Docker): allocator and lbnodeagent built
# statically (glibc linked in), the agent with its file capabilities, and the lab's pause and
# web images. The lab's nodes import them; `ctr images import` or `docker load` take them too.
HOST_TRIPLE  := $(shell rustc -vV | sed -n 's/^host: //p')
TRIPLE_VAR   := $(shell echo '$(HOST_TRIPLE)' | tr 'a-z-' 'A-Z_')
STATIC_BINS  := target/$(HOST_TRIPLE)/release
images: $(LABPOD)
	CARGO_TARGET_$(TRIPLE_VAR)_RUSTFLAGS='-C target-feature=+crt-static' \
		cargo build --release --locked --target $(HOST_TRIPLE) \
		-p purelb-agent -p purelb-allocator --bin lbnodeagent --bin allocator
	cargo run -q --locked -p testbed --bin purelb-lab -- images \
		--bin-dir $(STATIC_BINS) --labpod $(LABPOD) --out target/images

crds:
	cargo run -q -p purelb-api --bin crdgen

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# The whole path on this machine, left running: a real cluster of the lab's topology
# (testbed/topology/purelb.clab.yml) with PureLB installed from deploy/ (testbed's purelb-lab).
.PHONY: demo demo-down

demo: deps kubeenv images
	cargo run -q --locked -p testbed --bin purelb-lab -- demo

demo-down:
	cargo run -q --locked -p testbed --bin purelb-lab -- down
