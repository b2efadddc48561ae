//! Test harness shared by every crate's integration tests.
//!
//! - [`controlplane`]: a real etcd + kube-apiserver + kube-controller-manager
//!   (the Go helper in `kubeenv/`), one per test binary, a namespace per test.
//! - [`netlab`]: network namespaces joined by veth pairs, with FRR, BIRD and
//!   GoBGP started inside them.
//! - [`process`]: the processes under test, bound to the test binary's life.
//! - [`cluster`]: a real Kubernetes cluster (containerd, kubelet, kube-proxy
//!   in node namespaces, FRR, a client) built from the lab's containerlab
//!   topology, and the OCI images it runs.

pub mod cluster;
pub mod controlplane;
pub mod netlab;
pub mod process;
