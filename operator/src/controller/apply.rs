//! Server-side apply of one kind's desired objects, and pruning of what this pipeline
//! owns of that kind but no longer wants.
//!
//! The live objects are listed once per kind (by the pipeline's labels); an object
//! whose live copy already holds every desired field is not written at all, so a
//! reconcile with nothing to change makes no writes. Anything else is applied with
//! the operator's field manager, forced: the operator owns these fields.

use std::fmt::Debug;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::Error;

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "eventpipe-operator";

/// What syncing one kind did.
#[derive(Debug)]
pub struct Synced<K> {
    /// The live objects after the sync (for status): as listed, with what was applied
    /// as the API server returned it, without what was pruned.
    pub live: Vec<K>,
    /// Names of the objects created or changed.
    pub applied: Vec<String>,
    /// Names of the objects deleted.
    pub pruned: Vec<String>,
}

/// Applies `desired` in `api`'s namespace and prunes the objects matching `selector`
/// that are not desired.
pub async fn sync<K>(api: &Api<K>, selector: &str, desired: &[K]) -> Result<Synced<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = K::kind(&());
    let mut live = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| Error::List { kind: kind.to_string(), source })?
        .items;
    let mut applied = Vec::new();
    for object in desired {
        let name = object.name_any();
        let want = serde_json::to_value(object).expect("objects serialize");
        let unchanged = live
            .iter()
            .find(|l| l.name_any() == name)
            .is_some_and(|l| contains(&serde_json::to_value(l).expect("objects serialize"), &want));
        if unchanged {
            continue;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let now = api.patch(&name, &params, &Patch::Apply(&want)).await.map_err(|source| Error::Apply {
            kind: kind.to_string(),
            name: name.clone(),
            source,
        })?;
        live.retain(|l| l.name_any() != name);
        live.push(now);
        applied.push(name);
    }
    let mut pruned = Vec::new();
    let (keep, stale): (Vec<K>, Vec<K>) =
        live.into_iter().partition(|l| desired.iter().any(|d| d.name_any() == l.name_any()));
    for stale in &stale {
        let name = stale.name_any();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => pruned.push(name),
            // Already gone: nothing left to prune.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Prune { kind: kind.to_string(), name, source }),
        }
    }
    Ok(Synced { live: keep, applied, pruned })
}

/// Whether `live` holds every field of `want` with the same value: maps may have more
/// keys (defaults, status, metadata the API server adds), lists must have the same
/// length with each element contained.
pub fn contains(live: &Value, want: &Value) -> bool {
    match (live, want) {
        (Value::Object(l), Value::Object(w)) => w.iter().all(|(k, wv)| match l.get(k) {
            Some(lv) => contains(lv, wv),
            // An absent field equals an empty one the API server dropped.
            None => is_empty(wv),
        }),
        (Value::Array(l), Value::Array(w)) => l.len() == w.len() && l.iter().zip(w).all(|(lv, wv)| contains(lv, wv)),
        _ => live == want,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn live_objects_may_carry_more_than_is_wanted() {
        let want = json!({"spec": {"replicas": 1, "ports": [{"port": 80}]}, "metadata": {"labels": {"a": "b"}}});
        let live = json!({
            "spec": {"replicas": 1, "ports": [{"port": 80, "protocol": "TCP"}], "revisionHistoryLimit": 10},
            "metadata": {"labels": {"a": "b"}, "uid": "x"},
            "status": {}
        });
        assert!(contains(&live, &want));
        assert!(!contains(&json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}}), &want));
        assert!(!contains(&json!({"spec": {"replicas": 1, "ports": []}}), &want));
        assert!(!contains(&json!({"spec": {"replicas": 1, "ports": [{"port": 80}, {"port": 81}]}}), &want));
        assert!(contains(&json!({}), &json!({"spec": {}})));
    }
}
