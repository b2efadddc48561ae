//! Schema helpers that reproduce what controller-gen emits for Go integer types,
//! so the generated CRDs match upstream's byte for byte where it matters to clients.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Go `int32`/`uint32`: controller-gen writes `format: int32` for both.
pub fn int32(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int32" })
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

/// Go `[]uint32`.
pub fn int32_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "integer", "format": "int32" } })
}

/// A list of standard BGP communities `ASN:value`.
pub fn community_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "string", "pattern": "^\\d{1,5}:\\d{1,5}$" } })
}

/// A list of large BGP communities `A:B:C`.
pub fn large_community_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "string", "pattern": "^\\d+:\\d+:\\d+$" } })
}
