//! The Helm chart against the code: its ClusterRole and Role grant exactly the
//! permissions of `rbac.rs` — every verb the operator uses, nothing more, no
//! wildcards. (The CRD copy is checked in render.rs.)

use std::collections::BTreeSet;
use std::path::Path;

use eventpipe_operator::rbac::{Permission, CLUSTER_PERMISSIONS, NAMESPACE_PERMISSIONS};
use serde::Deserialize;
use serde_yaml::Value;

/// (group, resource, verb) triples granted by the `kind` objects of a chart template.
/// The RBAC templates are plain YAML (their template expressions are in quoted scalars
/// and comments), so they parse without rendering.
fn granted(template: &str, kind: &str) -> BTreeSet<(String, String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/eventpipe-operator/templates").join(template);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let doc = Value::deserialize(doc).unwrap();
        if doc.get("kind").and_then(Value::as_str) != Some(kind) {
            continue;
        }
        for rule in doc["rules"].as_sequence().unwrap() {
            let list = |key: &str| -> Vec<String> {
                rule[key].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    assert!(!out.is_empty(), "no {kind} rules in {}", path.display());
    out
}

fn needed(permissions: &[Permission]) -> BTreeSet<(String, String, String)> {
    permissions
        .iter()
        .flat_map(|p| p.verbs.iter().map(move |v| (p.group.to_owned(), p.resource.to_owned(), (*v).to_owned())))
        .collect()
}

#[test]
fn the_chart_grants_exactly_what_the_operator_uses() {
    for (template, kind, permissions) in
        [("clusterrole.yaml", "ClusterRole", CLUSTER_PERMISSIONS), ("role.yaml", "Role", NAMESPACE_PERMISSIONS)]
    {
        let granted = granted(template, kind);
        assert!(granted.iter().all(|(g, r, v)| g != "*" && r != "*" && v != "*"), "{template} has a wildcard");
        let needed = needed(permissions);
        let missing: Vec<_> = needed.difference(&granted).collect();
        let extra: Vec<_> = granted.difference(&needed).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{template}: missing {missing:?}, more than needed {extra:?}");
    }
}
