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

/// [`REASONING_KEYS`] normalised, as [`normalise`] makes them (a test
/// holds the two lists together).
const NORMALISED_KEYS: &[&[u8]] = &[
    b"rootcause",
    b"rootcause",
    b"probablecause",
    b"likelycause",
    b"cause",
    b"causes",
    b"diagnosis",
    b"explanation",
    b"reasoning",
    b"rationale",
    b"hypothesis",
    b"analysis",
    b"verdict",
    b"recommendation",
    b"recommendations",
    b"remediation",
    b"suggestedaction",
    b"suggestedfix",
    b"confidence",
    b"aisummary",
    b"insight",
    b"insights",
];

/// Whether `key` is a reasoning key, in any spelling.
pub fn is_reasoning_key(key: &str) -> bool {
    let mut a = [0u8; 64];
    let Some(norm) = normalise(key, &mut a) else {
        return false;
    };
    NORMALISED_KEYS.contains(&norm)
}

/// One step of a path into a JSON document.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `events[2].facts.details[0].root_cause`, from its steps.
fn render(path: &[Step<'_>], last: &str) -> String {
    let mut out = String::new();
    for step in path.iter().chain(std::iter::once(&Step::Key(last))) {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => {
                if out.is_empty() {
                    out.push('$');
                }
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// The path of the first reasoning key in `v` (depth-first, document order;
/// an object's own keys before its children's), e.g.
/// `events[2].facts.details[0].root_cause`.
pub fn find_reasoning_key(v: &Value) -> Option<String> {
    // Iterative walk: the depth is bounded by serde_json's recursion limit
    // already, but an explicit stack keeps this independent of it. The
    // path is kept as borrowed steps and rendered only for a hit, so a
    // clean document costs no allocation per key.
    let mut stack: Vec<(&Value, usize, Option<Step<'_>>)> = vec![(v, 0, None)];
    let mut path: Vec<Step<'_>> = Vec::new();
    while let Some((node, depth, step)) = stack.pop() {
        path.truncate(depth.saturating_sub(1));
        if let Some(s) = step {
            path.push(s);
        }
        match node {
            Value::Object(map) => {
                if let Some(k) = map.keys().find(|k| is_reasoning_key(k)) {
                    return Some(render(&path, k));
                }
                for (k, child) in map.iter().rev() {
                    if matches!(child, Value::Object(_) | Value::Array(_)) {
                        stack.push((child, depth + 1, Some(Step::Key(k))));
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    if matches!(item, Value::Object(_) | Value::Array(_)) {
                        stack.push((item, depth + 1, Some(Step::Index(i))));
                    }
                }
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
    fn the_normalised_list_is_the_key_list() {
        let made: Vec<Vec<u8>> = REASONING_KEYS
            .iter()
            .map(|k| normalise(k, &mut [0u8; 64]).unwrap().to_vec())
            .collect();
        let kept: Vec<Vec<u8>> = NORMALISED_KEYS.iter().map(|k| k.to_vec()).collect();
        assert_eq!(made, kept);
    }

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
