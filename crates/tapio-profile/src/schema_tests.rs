//! The JSON Schema in docs/schema and tapio-profile agree: every example
//! profile validates against both, and a set of bad documents fails both.
//!
//! The validator below implements the subset of JSON Schema draft-07 the
//! schema uses (type, const, enum, properties, required,
//! additionalProperties: false, minimum/maximum, maxLength, items,
//! maxItems); an unsupported keyword fails the test rather than being
//! ignored.

use serde_json::Value;

fn validate(schema: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    let obj = schema.as_object().expect("schema node is an object");
    for key in obj.keys() {
        assert!(
            [
                "$schema",
                "$id",
                "title",
                "description",
                "type",
                "const",
                "enum",
                "properties",
                "required",
                "additionalProperties",
                "minimum",
                "maximum",
                "maxLength",
                "items",
                "maxItems",
            ]
            .contains(&key.as_str()),
            "schema keyword {key} is not supported by this test's validator"
        );
    }
    if let Some(t) = obj.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            _ => panic!("type {t}"),
        };
        if !ok {
            errs.push(format!("{path}: not {t}"));
            return;
        }
    }
    if let Some(c) = obj.get("const") {
        if v != c {
            errs.push(format!("{path}: not {c}"));
        }
    }
    if let Some(e) = obj.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{path}: not one of {e:?}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if obj
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errs.push(format!("{path}: below minimum"));
        }
        if obj
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errs.push(format!("{path}: above maximum"));
        }
    }
    if let (Some(s), Some(m)) = (v.as_str(), obj.get("maxLength").and_then(Value::as_u64)) {
        if s.chars().count() as u64 > m {
            errs.push(format!("{path}: too long"));
        }
    }
    if let Some(items) = v.as_array() {
        if obj
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| items.len() as u64 > m)
        {
            errs.push(format!("{path}: too many items"));
        }
        if let Some(s) = obj.get("items") {
            for (i, it) in items.iter().enumerate() {
                validate(s, it, &format!("{path}[{i}]"), errs);
            }
        }
    }
    if let Some(map) = v.as_object() {
        let props = obj.get("properties").and_then(Value::as_object);
        for r in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !map.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{path}: missing {r}"));
            }
        }
        for (k, val) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, val, &format!("{path}.{k}"), errs),
                None if obj.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errs.push(format!("{path}: unknown {k}"))
                }
                None => {}
            }
        }
    }
}

fn schema() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/schema/evidence-profile.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn schema_ok(yaml: &str) -> bool {
    let v: Value = serde_yaml::from_str(yaml).unwrap();
    let mut errs = Vec::new();
    validate(&schema(), &v, "$", &mut errs);
    errs.is_empty()
}

fn profile_ok(yaml: &str) -> bool {
    match serde_yaml::from_str::<crate::EvidenceProfile>(yaml) {
        Ok(doc) => crate::compile(&doc).is_ok(),
        Err(_) => false,
    }
}

#[test]
fn examples_validate_against_both() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/profiles");
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(schema_ok(&text), "schema rejects {text}");
        assert!(profile_ok(&text), "tapio-profile rejects {text}");
    }
}

#[test]
fn bad_documents_fail_both() {
    let head = "apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: production-default\n";
    let bad = [
        "apiVersion: tapio.dev/v2\nkind: EvidenceProfile\nbase: production-default\n".to_string(),
        "apiVersion: tapio.dev/v1\nkind: Profile\nbase: production-default\n".to_string(),
        "apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: prod\n".to_string(),
        "apiVersion: tapio.dev/v1\nkind: EvidenceProfile\n".to_string(),
        format!("{head}extra: 1\n"),
        format!("{head}overrides:\n  netwrk: {{}}\n"),
        format!("{head}overrides:\n  network:\n    enabled: yes please\n"),
        format!("{head}overrides:\n  network:\n    retransmit_window_ms: 5\n"),
        format!("{head}overrides:\n  storage:\n    slow_io:\n      warning_ms: -1\n"),
        format!("{head}overrides:\n  storage:\n    slow_io:\n      warn_ms: 5\n"),
        format!("{head}overrides:\n  process:\n    ignore_exit_codes: [0]\n"),
        format!("{head}overrides:\n  process:\n    ignore_exit_codes: [256]\n"),
        format!(
            "{head}overrides:\n  process:\n    ignore_exit_codes: [{}]\n",
            vec!["1"; 17].join(",")
        ),
        format!("{head}overrides:\n  node:\n    stall_warning: 2\n"),
        format!("{head}overrides:\n  batching:\n    max_bytes: 100\n"),
        format!("{head}overrides:\n  ringbuf:\n    poll_timeout_ms: 0\n"),
        format!("{head}metadata:\n  name: {}\n", "x".repeat(200)),
    ];
    for doc in &bad {
        assert!(!schema_ok(doc), "schema accepts {doc}");
        assert!(!profile_ok(doc), "tapio-profile accepts {doc}");
    }
}

/// Arbitrary YAML-shaped documents: parsing and compiling never panic,
/// every validation error has a field path, and every YAML error a
/// position.
#[test]
fn arbitrary_documents_never_panic_and_errors_are_located() {
    const KEYS: &[&str] = &[
        "apiVersion",
        "kind",
        "base",
        "metadata",
        "name",
        "overrides",
        "network",
        "storage",
        "process",
        "node",
        "batching",
        "ringbuf",
        "enabled",
        "retransmit_window_ms",
        "slow_io",
        "warning_ms",
        "critical_ms",
        "exec",
        "ignore_exit_codes",
        "window_ms",
        "max_events",
        "max_bytes",
        "flush_interval_ms",
        "wakeup_bytes",
        "poll_timeout_ms",
        "typo",
    ];
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    fn arb(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
        match if depth > 3 { next() % 4 } else { next() % 6 } {
            0 => Value::Bool(next() % 2 == 0),
            1 => serde_json::json!((next() % 5_000_000) as i64 - 10),
            2 => Value::String(
                [
                    "tapio.dev/v1",
                    "EvidenceProfile",
                    "production-default",
                    "x",
                    "",
                ][(next() % 5) as usize]
                    .into(),
            ),
            3 => serde_json::json!((next() % 1000) as f64 / 100.0),
            4 => Value::Array((0..next() % 20).map(|_| arb(next, depth + 1)).collect()),
            _ => {
                let mut m = serde_json::Map::new();
                for _ in 0..next() % 6 {
                    m.insert(
                        KEYS[(next() % KEYS.len() as u64) as usize].into(),
                        arb(next, depth + 1),
                    );
                }
                Value::Object(m)
            }
        }
    }
    for _ in 0..5_000 {
        let mut v = arb(&mut next, 0);
        if let Some(m) = v.as_object_mut() {
            if next() % 3 != 0 {
                m.insert("apiVersion".into(), "tapio.dev/v1".into());
                m.insert("kind".into(), "EvidenceProfile".into());
                m.insert("base".into(), "production-default".into());
            }
        }
        let yaml = serde_yaml::to_string(&v).unwrap();
        match serde_yaml::from_str::<crate::EvidenceProfile>(&yaml) {
            Ok(doc) => {
                if let Err(errs) = crate::compile(&doc) {
                    for e in errs.0 {
                        assert!(!e.path.is_empty(), "validation error without a path: {e}");
                    }
                }
            }
            // A parse error must say where: a line and column, so an
            // operator can find it in a file they edit by hand.
            Err(e) => assert!(e.location().is_some(), "error without a location: {e}"),
        }
    }
}

/// Every range in the schema is the one in `tapio_wire::limits`, which the
/// compiler and the agent check: one source, three readers.
#[test]
fn the_schema_ranges_are_the_limits() {
    use tapio_wire::limits::{self, Range};
    let cases: [(&[&str], Range); 9] = [
        (
            &["network", "retransmit_window_ms"],
            limits::RETRANSMIT_WINDOW_MS,
        ),
        (&["storage", "slow_io", "warning_ms"], limits::SLOW_IO_MS),
        (&["storage", "slow_io", "critical_ms"], limits::SLOW_IO_MS),
        (&["process", "ignore_exit_codes", "[]"], limits::EXIT_CODE),
        (&["batching", "max_events"], limits::MAX_EVENTS),
        (&["batching", "max_bytes"], limits::MAX_BYTES),
        (
            &["batching", "flush_interval_ms"],
            limits::FLUSH_INTERVAL_MS,
        ),
        (&["ringbuf", "wakeup_bytes"], limits::WAKEUP_BYTES),
        (&["ringbuf", "poll_timeout_ms"], limits::POLL_TIMEOUT_MS),
    ];
    let s = schema();
    let mut seen = 0;
    for (path, r) in cases {
        let mut node = &s["properties"]["overrides"];
        for p in path {
            node = if *p == "[]" {
                &node["items"]
            } else {
                &node["properties"][*p]
            };
        }
        let got = (node["minimum"].as_u64(), node["maximum"].as_u64());
        assert_eq!(got, (Some(r.min), Some(r.max)), "schema range of {path:?}");
        seen += 1;
    }
    assert_eq!(seen, 9);
    let list =
        &s["properties"]["overrides"]["properties"]["process"]["properties"]["ignore_exit_codes"];
    assert_eq!(
        list["maxItems"].as_u64(),
        Some(limits::MAX_IGNORED_EXIT_CODES as u64)
    );
}

#[test]
fn the_schema_caps_wakeup_bytes_where_the_compiler_does() {
    let max = &schema()["properties"]["overrides"]["properties"]["ringbuf"]["properties"]["wakeup_bytes"]
        ["maximum"];
    assert_eq!(max.as_u64(), Some(u64::from(tapio_wire::WAKEUP_BYTES_MAX)));
    assert!(schema_ok(
        "apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nmetadata:\n  name: x\nbase: production-default\noverrides:\n  ringbuf:\n    wakeup_bytes: 131072\n"
    ));
}
