//! Schema helpers that reproduce what controller-gen emits for Go integer types,
//! so the generated CRDs match upstream's byte for byte where it matters to clients.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Go `int32`: `format: int32`.
pub fn int32(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int32" })
}

/// Go `uint32`. controller-gen writes `format: int32`, and the apiserver enforces it, so
/// k8gobgp's CRD refuses 4-byte ASNs from 2^31 up (RFC 6996's private 4200000000-4294967294
/// among them). We keep the type and widen the range to what a uint32 holds.
pub fn uint32(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
}

/// Go `int64`/`uint64`: `format: int64`.
pub fn int64(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int64" })
}

/// Go `int64` with `+kubebuilder:validation:Minimum=0`.
pub fn non_negative_int64(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int64", "minimum": 0 })
}

/// Go `int`: controller-gen writes no format.
pub fn int(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer" })
}

/// Go `int` with `+kubebuilder:validation:Minimum=0`.
pub fn non_negative_int(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 0 })
}

/// Go `[]uint32`, widened as [`uint32`].
pub fn uint32_list(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": uint32(generator) })
}

/// A list of standard BGP communities `ASN:value`.
pub fn community_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "string", "pattern": "^\\d{1,5}:\\d{1,5}$" } })
}

/// A list of large BGP communities `A:B:C`.
pub fn large_community_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "string", "pattern": "^\\d+:\\d+:\\d+$" } })
}
