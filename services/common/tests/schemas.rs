//! The committed JSON Schema files are exactly what the event types generate.
//! Regenerate with `UPDATE_SCHEMAS=1 cargo test -p eventpipe-common --test schemas`.

use std::path::PathBuf;

use eventpipe_common::events::schemas;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

#[test]
fn committed_schemas_match_the_types() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (stem, schema) in schemas() {
        let path = schema_dir().join(format!("{stem}.schema.json"));
        let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == generated => {}
            _ => stale.push(path.display().to_string()),
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas: {stale:?}; run UPDATE_SCHEMAS=1 cargo test -p eventpipe-common --test schemas and commit"
    );
    let files = std::fs::read_dir(schema_dir()).unwrap().count();
    assert_eq!(files, schemas().len(), "schemas/ holds a file no type generates");
}

#[test]
fn schemas_reject_what_the_types_reject() {
    let (_, schema) = schemas().into_iter().find(|(stem, _)| *stem == "risk-score").unwrap();
    let validator = jsonschema::validator_for(&serde_json::to_value(&schema).unwrap()).unwrap();
    let valid = serde_json::json!({
        "event_id": "5e1f0a3c-8d2b-4c7e-9a61-0f3b2d4e6a81",
        "event_time": "2026-01-02T03:04:05Z",
        "schema_version": 1,
        "customer_id": "C0000001",
        "score": 0.93,
        "band": "critical",
        "model_version": "m1",
        "top_factors": [{"feature": "failed_debits_30d", "value": 2.0, "contribution": 1.4}],
        "trigger_event_id": "5e1f0a3c-8d2b-4c7e-9a61-0f3b2d4e6a82"
    });
    assert!(validator.is_valid(&valid));
    let mut wrong_band = valid.clone();
    wrong_band["band"] = "severe".into();
    assert!(!validator.is_valid(&wrong_band));
    let mut out_of_range = valid.clone();
    out_of_range["score"] = 1.5.into();
    assert!(!validator.is_valid(&out_of_range));
    let mut missing = valid;
    missing.as_object_mut().unwrap().remove("customer_id");
    assert!(!validator.is_valid(&missing));
}
