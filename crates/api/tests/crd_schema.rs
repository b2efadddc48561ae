//! The committed CRDs are what the types generate, and they keep k8gobgp's schema.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

fn crds_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crds"))
}

#[test]
fn committed_crds_match_the_types() {
    let crds = purelb_api::crd::all().expect("CRDs serialise");
    let mut stale = Vec::new();
    for crd in &crds {
        let name = purelb_api::crd::file_name(crd);
        let generated = purelb_api::crd::to_yaml(crd).expect("CRD serialises to YAML");
        let committed = std::fs::read_to_string(crds_dir().join(&name)).unwrap_or_default();
        if committed != generated {
            stale.push(name);
        }
    }
    let committed_files = std::fs::read_dir(crds_dir())
        .expect("deploy/crds exists")
        .count();
    assert!(
        stale.is_empty(),
        "deploy/crds is stale for {stale:?}: run `cargo run -p purelb-api --bin crdgen`"
    );
    assert_eq!(
        committed_files,
        crds.len(),
        "deploy/crds holds files no type generates"
    );
}

/// Every property path of a schema with its type (`.spec.global.asn` -> `integer`).
fn property_types(schema: &Value) -> BTreeMap<String, String> {
    fn walk(schema: &Value, path: String, out: &mut BTreeMap<String, String>) {
        let kind = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        out.insert(path.clone(), kind.to_owned());
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                walk(child, format!("{path}.{name}"), out);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, format!("{path}[]"), out);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            walk(values, format!("{path}{{}}"), out);
        }
    }
    let mut out = BTreeMap::new();
    walk(schema, String::new(), &mut out);
    out
}

fn openapi_schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

fn assert_keeps_upstream_schema(upstream_file: &str, kind: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(upstream_file);
    let text = std::fs::read_to_string(&path).expect("upstream CRD is readable");
    let upstream: Value = serde_saphyr::from_str(&text).expect("upstream CRD is YAML");
    let ours = purelb_api::crd::all()
        .expect("CRDs serialise")
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .expect("we generate the kind");
    let ours = serde_json::to_value(ours).expect("CRD serialises");

    assert_eq!(
        upstream["spec"]["names"]["plural"],
        ours["spec"]["names"]["plural"]
    );
    assert_eq!(upstream["spec"]["scope"], ours["spec"]["scope"]);

    let ours = property_types(openapi_schema(&ours));
    let mut differences = Vec::new();
    for (path, upstream_type) in property_types(openapi_schema(&upstream)) {
        // kube-derive leaves apiVersion, kind and metadata to the apiserver's defaults.
        if [".apiVersion", ".kind", ".metadata"].contains(&path.as_str()) {
            continue;
        }
        match ours.get(&path) {
            Some(our_type) if *our_type == upstream_type => {}
            Some(our_type) => {
                differences.push(format!("{path}: ours {our_type}, upstream {upstream_type}"))
            }
            None => differences.push(format!("{path}: missing (upstream {upstream_type})")),
        }
    }
    assert!(
        differences.is_empty(),
        "{kind} differs from k8gobgp:\n{}",
        differences.join("\n")
    );
}

#[test]
fn bgp_configuration_keeps_every_k8gobgp_field() {
    assert_keeps_upstream_schema("gobgp-bgpconfig-crd.yaml", "BGPConfiguration");
}

#[test]
fn bgp_node_status_keeps_every_k8gobgp_field() {
    assert_keeps_upstream_schema("gobgp-bgpnodestatus-crd.yaml", "BGPNodeStatus");
}

#[test]
fn schema_walk_notices_a_missing_field() {
    let upstream = serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let ours = serde_json::json!({"type": "object", "properties": {}});
    let ours = property_types(&ours);
    assert!(
        property_types(&upstream)
            .keys()
            .any(|path| !ours.contains_key(path))
    );
}
