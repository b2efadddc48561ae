//! The PureLB allocator: IPAM core and Kubernetes controller. Not built yet (issue 3); see README.md.
