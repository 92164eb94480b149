//! Tests of validation and compilation, with YAML as the operators write it.

use crate::*;
use tapio_wire::CompiledConfig;

fn parse(yaml: &str) -> Result<EvidenceProfile, serde_yaml::Error> {
    serde_yaml::from_str(yaml)
}

fn compile_yaml(yaml: &str) -> Result<CompiledConfig, ProfileErrors> {
    compile(&parse(yaml).expect("test yaml parses"))
}

const HEAD: &str = "apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: production-default\n";

#[test]
fn production_default_equals_the_agents_standalone_default() {
    assert_eq!(
        compile_builtin("production-default").unwrap(),
        CompiledConfig::standalone_default()
    );
}

#[test]
fn every_builtin_compiles_and_is_wire_valid() {
    for name in builtin_names() {
        let c = compile_builtin(name).unwrap();
        c.validate().unwrap();
        assert_eq!(c.profile, name);
    }
    let n = compile_builtin("network-only").unwrap();
    assert!(n.network.enabled && !n.storage.enabled && !n.process.enabled);
    assert!(compile_builtin("nope").is_none());
}

#[test]
fn example_profiles_in_docs_compile() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/profiles");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema="),
            "{} lacks the schema modeline",
            path.display()
        );
        let doc = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        compile(&doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 3, "expected the example profiles, found {seen}");
}

#[test]
fn overrides_convert_units_and_dedupe() {
    let c = compile_yaml(&format!(
        "{HEAD}overrides:\n  network:\n    retransmit_window_ms: 2500\n  storage:\n    slow_io:\n      warning_ms: 0\n      critical_ms: 7\n  process:\n    exec: true\n    ignore_exit_codes: [3, 1, 3, 255]\n"
    ))
    .unwrap();
    assert_eq!(c.network.retransmit_window_ns, 2_500_000_000);
    assert_eq!(c.storage.slow_io_warning_ns, 0);
    assert_eq!(c.storage.slow_io_critical_ns, 7_000_000);
    assert!(c.process.exec_enabled);
    assert_eq!(c.process.ignore_exit_codes, vec![1, 3, 255]);
    // untouched values come from the base
    assert_eq!(c.batching, CompiledConfig::standalone_default().batching);
}

#[test]
fn critical_below_warning_names_the_path_and_value() {
    let e = compile_yaml(&format!(
        "{HEAD}overrides:\n  storage:\n    slow_io:\n      warning_ms: 150\n      critical_ms: 100\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "overrides.storage.slow_io.critical_ms: must be >= warning_ms (150)"
    );
    // against the base's warning when only critical is set
    let e = compile_yaml(&format!(
        "{HEAD}overrides:\n  storage:\n    slow_io:\n      critical_ms: 10\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "overrides.storage.slow_io.critical_ms: must be >= warning_ms (100)"
    );
}

#[test]
fn every_range_error_has_its_path() {
    let cases = [
        (
            "  network:\n    retransmit_window_ms: 5\n",
            "overrides.network.retransmit_window_ms",
        ),
        (
            "  storage:\n    slow_io:\n      warning_ms: 9999999\n",
            "overrides.storage.slow_io.warning_ms",
        ),
        (
            "  process:\n    ignore_exit_codes: [0]\n",
            "overrides.process.ignore_exit_codes[0]",
        ),
        (
            "  process:\n    ignore_exit_codes: [1, 256]\n",
            "overrides.process.ignore_exit_codes[1]",
        ),
        ("  node:\n    enabled: false\n", "overrides.node"),
        (
            "  batching:\n    max_events: 0\n",
            "overrides.batching.max_events",
        ),
        (
            "  batching:\n    max_bytes: 10\n",
            "overrides.batching.max_bytes",
        ),
        (
            "  batching:\n    flush_interval_ms: 0\n",
            "overrides.batching.flush_interval_ms",
        ),
        (
            "  ringbuf:\n    wakeup_bytes: 0\n",
            "overrides.ringbuf.wakeup_bytes",
        ),
        (
            "  ringbuf:\n    wakeup_bytes: 2000000\n",
            "overrides.ringbuf.wakeup_bytes",
        ),
        // The bug this limit fixes: 256 KiB was accepted (the old limit was
        // the network ring's 1 MiB) and could never fire on the 256 KiB
        // storage and process rings.
        (
            "  ringbuf:\n    wakeup_bytes: 262144\n",
            "overrides.ringbuf.wakeup_bytes",
        ),
        (
            "  ringbuf:\n    wakeup_bytes: 131073\n",
            "overrides.ringbuf.wakeup_bytes",
        ),
        (
            "  ringbuf:\n    poll_timeout_ms: 5000\n",
            "overrides.ringbuf.poll_timeout_ms",
        ),
    ];
    for (yaml, path) in cases {
        let e = compile_yaml(&format!("{HEAD}overrides:\n{yaml}")).unwrap_err();
        assert_eq!(e.0.len(), 1, "{yaml}: {e}");
        assert_eq!(e.0[0].path, path, "{yaml}");
    }
}

#[test]
fn too_many_exit_codes() {
    let list: Vec<String> = (1..=17).map(|i| i.to_string()).collect();
    let e = compile_yaml(&format!(
        "{HEAD}overrides:\n  process:\n    ignore_exit_codes: [{}]\n",
        list.join(", ")
    ))
    .unwrap_err();
    assert_eq!(e.0[0].path, "overrides.process.ignore_exit_codes");
}

#[test]
fn all_errors_are_reported_together() {
    let e = compile_yaml(
        "apiVersion: v0\nkind: Profile\nbase: production-default\noverrides:\n  batching:\n    max_events: 0\n",
    )
    .unwrap_err();
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["apiVersion", "kind", "overrides.batching.max_events"]
    );
}

#[test]
fn unknown_base_lists_the_builtins() {
    let e =
        compile_yaml("apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: prod\n").unwrap_err();
    assert_eq!(e.0[0].path, "base");
    assert!(
        e.0[0]
            .message
            .contains("production-default, network-only, investigation")
    );
}

#[test]
fn typos_are_errors_not_defaults() {
    for yaml in [
        format!("{HEAD}overide:\n  network: {{}}\n"),
        format!("{HEAD}overrides:\n  netwrok:\n    enabled: false\n"),
        format!("{HEAD}overrides:\n  storage:\n    slow_io:\n      warn_ms: 5\n"),
        format!("{HEAD}overrides:\n  process:\n    exec_enabled: true\n"),
        format!("{HEAD}metadata:\n  name: x\n  labels: {{}}\n"),
    ] {
        let e = parse(&yaml).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{yaml}: {e}");
    }
}

#[test]
fn metadata_name_becomes_the_profile_name() {
    let c = compile_yaml(&format!("{HEAD}metadata:\n  name: web\n")).unwrap();
    assert_eq!(c.profile, "web");
}

#[test]
fn a_profile_with_the_removed_node_section_is_told_what_to_do() {
    let e = compile_yaml(&format!("{HEAD}overrides:\n  node:\n    enabled: true\n")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("overrides.node: the node observer was removed"),
        "{msg}"
    );
    assert!(msg.contains("delete this section"), "{msg}");
}
