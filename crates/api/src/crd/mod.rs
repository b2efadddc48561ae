//! Custom resource types, field for field compatible with PureLB v0.17 and k8gobgp 0.2.4.
