//! The facts-not-reasoning boundary.
//!
//! Tapio carries what the kernel observed; explaining it belongs
//! downstream. A payload that carries any of these keys, at any depth and
//! inside arrays, is rejected as a whole with `REASONING_FIELD` (422).
//! Keys are compared after normalising: case folded and every separator
//! (`_`, `-`, `.`, space) removed, so `root_cause`, `rootCause`,
//! `Root-Cause` and `probableCause` are all caught.

use serde_json::Value;

/// The forbidden keys (normalized: lowercase, `_` separators).
pub const REASONING_KEYS: &[&str] = &[
    "root_cause",
    "rootcause",
    "probable_cause",
    "likely_cause",
    "cause",
    "causes",
    "diagnosis",
    "explanation",
    "reasoning",
    "rationale",
    "hypothesis",
    "analysis",
    "verdict",
    "recommendation",
    "recommendations",
    "remediation",
    "suggested_action",
    "suggested_fix",
    "confidence",
    "ai_summary",
    "insight",
    "insights",
];

/// `s` lowercased with every separator removed, into `buf`; None when it
/// does not fit (no reasoning key is that long).
fn normalise<'b>(s: &str, buf: &'b mut [u8; 64]) -> Option<&'b [u8]> {
    let mut n = 0;
    for b in s.bytes() {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            continue;
        }
        *buf.get_mut(n)? = b.to_ascii_lowercase();
        n += 1;
    }
    Some(&buf[..n])
}

/// Whether `key` is a reasoning key, in any spelling.
pub fn is_reasoning_key(key: &str) -> bool {
    let mut a = [0u8; 64];
    let Some(norm) = normalise(key, &mut a) else {
        return false;
    };
    REASONING_KEYS.iter().any(|k| {
        let mut b = [0u8; 64];
        normalise(k, &mut b) == Some(norm)
    })
}

/// The path of the first reasoning key in `v` (depth-first, document order),
/// e.g. `events[2].facts.details[0].root_cause`.
pub fn find_reasoning_key(v: &Value) -> Option<String> {
    // Iterative walk: the depth is bounded by serde_json's recursion limit
    // already, but an explicit stack keeps this independent of it.
    let mut stack: Vec<(&Value, String)> = vec![(v, String::new())];
    while let Some((node, path)) = stack.pop() {
        match node {
            Value::Object(map) => {
                let mut children = Vec::with_capacity(map.len());
                for (k, child) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if is_reasoning_key(k) {
                        return Some(p);
                    }
                    children.push((child, p));
                }
                stack.extend(children.into_iter().rev());
            }
            Value::Array(items) => {
                let base = if path.is_empty() {
                    "$".to_string()
                } else {
                    path
                };
                stack.extend(
                    items
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(i, item)| (item, format!("{base}[{i}]"))),
                );
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_level_and_nested_objects() {
        assert_eq!(
            find_reasoning_key(&json!({"root_cause": 1})).as_deref(),
            Some("root_cause")
        );
        assert_eq!(
            find_reasoning_key(&json!({"facts": {"a": {"Diagnosis": "x"}}})).as_deref(),
            Some("facts.a.Diagnosis")
        );
    }

    #[test]
    fn inside_arrays() {
        let v =
            json!({"events": [{"facts": {}}, {"facts": {"list": [1, {"root-cause": "disk"}]}}]});
        assert_eq!(
            find_reasoning_key(&v).as_deref(),
            Some("events[1].facts.list[1].root-cause")
        );
        assert_eq!(
            find_reasoning_key(&json!([[{"confidence": 0.9}]])).as_deref(),
            Some("$[0][0].confidence")
        );
    }

    #[test]
    fn facts_pass() {
        let v =
            json!({"events": [{"facts": {"dst_port": 80, "src_ip": "10.0.0.1", "causeway": 1}}]});
        assert_eq!(find_reasoning_key(&v), None);
        // values are not keys
        assert_eq!(find_reasoning_key(&json!({"comm": "root_cause"})), None);
    }

    #[test]
    fn every_listed_key_is_matched_in_any_case() {
        for k in REASONING_KEYS {
            assert!(is_reasoning_key(k));
            assert!(is_reasoning_key(&k.to_uppercase()));
            assert!(is_reasoning_key(&k.replace('_', "-")));
        }
        assert!(!is_reasoning_key(&"x".repeat(100)));
    }

    #[test]
    fn camel_case_and_other_spellings_are_caught() {
        for k in [
            "probableCause",
            "suggestedAction",
            "aiSummary",
            "rootCause",
            "Root-Cause",
            "root.cause",
            "AI_SUMMARY",
            "suggested action",
        ] {
            assert!(is_reasoning_key(k), "{k}");
        }
        for k in ["causeway", "dst_port", "comm", "cgroup_path", "because"] {
            assert!(!is_reasoning_key(k), "{k}");
        }
        let v = json!({"events": [{"facts": {"probableCause": "disk"}}]});
        assert_eq!(
            find_reasoning_key(&v).as_deref(),
            Some("events[0].facts.probableCause")
        );
    }
}
