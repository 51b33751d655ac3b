//! Relabelling behaviour, written from the Prometheus configuration documentation, section
//! `<relabel_config>`
//! (<https://prometheus.io/docs/prometheus/latest/configuration/configuration/#relabel_config>):
//! one test per action, the defaults it lists, and its examples. Expected hashmod values come
//! from an independent md5 (Python's `hashlib`; `baz % 1000 = 976` is also the value in
//! Prometheus' own `relabel_test.go`).

use super::*;
use pyro_core::Labels;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_iter(pairs.iter().copied())
}

fn rule(action: Action) -> RelabelConfig {
    RelabelConfig {
        action,
        ..RelabelConfig::default()
    }
}

fn src(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn run(rules: &[RelabelConfig], input: &[(&str, &str)]) -> Option<Labels> {
    RelabelRules::new(rules).unwrap().apply(labels(input))
}

const ABC: [(&str, &str); 3] = [("a", "foo"), ("b", "bar"), ("c", "baz")];

/// "The defaults": `action: replace`, `separator: ;`, `regex: (.*)`, `replacement: $1`.
#[test]
fn defaults() {
    let d = RelabelConfig::default();
    assert_eq!(d.action, Action::Replace);
    assert_eq!(d.separator, ";");
    assert_eq!(d.regex, "(.*)");
    assert_eq!(d.replacement, "$1");
    assert_eq!(d.modulus, 0);
    // With only source and target set, `replace` copies the joined values.
    let r = RelabelConfig {
        source_labels: src(&["a", "b"]),
        target_label: "joined".into(),
        ..d
    };
    let out = run(&[r], &ABC).unwrap();
    assert_eq!(out.get("joined"), Some("foo;bar"));
    // Deserializing fills in the same defaults, with Alloy's field names.
    let parsed: RelabelConfig =
        serde_json::from_str(r#"{"source_labels": ["a", "b"], "target_label": "joined"}"#).unwrap();
    assert_eq!(parsed.separator, ";");
    assert_eq!(parsed.action, Action::Replace);
    assert!(serde_json::from_str::<RelabelConfig>(r#"{"action": "Replace"}"#).is_err());
    assert!(serde_json::from_str::<RelabelConfig>(r#"{"actoin": "keep"}"#).is_err());
    let all: Vec<Action> = serde_json::from_str(
        r#"["replace","keep","drop","keepequal","dropequal","hashmod","labelmap","labeldrop","labelkeep","lowercase","uppercase"]"#,
    )
    .unwrap();
    assert_eq!(all.len(), 11);
    for a in all {
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
    }
}

/// `replace`: "Match regex against the concatenated source_labels. Then, set target_label to
/// replacement, with match group references (${1}, ${2}, ...) in replacement substituted by
/// their value. If regex does not match, no replacement takes place."
#[test]
fn replace() {
    let r = RelabelConfig {
        source_labels: src(&["a"]),
        regex: "f(.*)".into(),
        target_label: "d".into(),
        replacement: "ch${1}".into(),
        ..rule(Action::Replace)
    };
    assert_eq!(
        run(std::slice::from_ref(&r), &ABC).unwrap().get("d"),
        Some("choo")
    );

    // Several source labels, joined by the separator.
    let r2 = RelabelConfig {
        source_labels: src(&["a", "b"]),
        regex: "f(.*);(.*)r".into(),
        target_label: "a".into(),
        replacement: "b${1}${2}m".into(),
        ..rule(Action::Replace)
    };
    assert_eq!(run(&[r2], &ABC).unwrap().get("a"), Some("boobam"));

    // No match: nothing changes.
    let nomatch = RelabelConfig {
        regex: "x(.*)".into(),
        ..r.clone()
    };
    assert_eq!(run(&[nomatch], &ABC).unwrap(), labels(&ABC));

    // The regex is anchored on both ends: `o` does not match "foo", `.*o` does.
    let anchored = |regex: &str| RelabelConfig {
        source_labels: src(&["a"]),
        regex: regex.into(),
        target_label: "m".into(),
        replacement: "yes".into(),
        ..rule(Action::Replace)
    };
    assert_eq!(run(&[anchored("o")], &ABC).unwrap().get("m"), None);
    assert_eq!(run(&[anchored(".*o")], &ABC).unwrap().get("m"), Some("yes"));
    // `.` matches a newline.
    assert_eq!(
        run(&[anchored("fo.*ar")], &[("a", "foo\nbar")])
            .unwrap()
            .get("m"),
        Some("yes")
    );

    // A missing source label counts as "".
    let missing = RelabelConfig {
        source_labels: src(&["nope", "a"]),
        target_label: "x".into(),
        ..rule(Action::Replace)
    };
    assert_eq!(run(&[missing], &ABC).unwrap().get("x"), Some(";foo"));

    // A replacement that expands to "" deletes the target label.
    let delete = RelabelConfig {
        source_labels: src(&["nope"]),
        target_label: "b".into(),
        ..rule(Action::Replace)
    };
    assert_eq!(run(&[delete], &ABC).unwrap().get("b"), None);

    // The documented example: setting the port of `__address__` from a pod annotation.
    let port = RelabelConfig {
        source_labels: src(&[
            "__address__",
            "__meta_kubernetes_pod_annotation_prometheus_io_port",
        ]),
        regex: r"([^:]+)(?::\d+)?;(\d+)".into(),
        replacement: "$1:$2".into(),
        target_label: "__address__".into(),
        ..rule(Action::Replace)
    };
    let out = run(
        std::slice::from_ref(&port),
        &[
            ("__address__", "10.1.2.3:8080"),
            (
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                "9102",
            ),
        ],
    )
    .unwrap();
    assert_eq!(out.get("__address__"), Some("10.1.2.3:9102"));
    // `\d` is ASCII, as in Go: Arabic-Indic digits do not match.
    let out = run(
        &[port],
        &[
            ("__address__", "10.1.2.3"),
            (
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                "٩١٠٢",
            ),
        ],
    )
    .unwrap();
    assert_eq!(out.get("__address__"), Some("10.1.2.3"));
}

/// `replace` with references in `target_label`, and a target name that is not valid.
#[test]
fn replace_target_template() {
    let r = RelabelConfig {
        source_labels: src(&["a"]),
        regex: "some-([^-]+)-([^,]+)".into(),
        target_label: "${1}".into(),
        replacement: "${2}".into(),
        ..rule(Action::Replace)
    };
    let out = run(std::slice::from_ref(&r), &[("a", "some-name-value")]).unwrap();
    assert_eq!(out.get("name"), Some("value"));
    // "2name" is not a label name: the labels stay as they were.
    let input = [("a", "some-2name-value")];
    assert_eq!(
        run(std::slice::from_ref(&r), &input).unwrap(),
        labels(&input)
    );
    // With UTF-8 names, "2name" is accepted.
    let utf8 = RelabelRules::with_validation(&[r], NameValidation::Utf8).unwrap();
    assert_eq!(
        utf8.apply(labels(&input)).unwrap().get("2name"),
        Some("value")
    );
}

/// `$1x` is the group named `1x` (empty); `${1}x` is group 1 followed by `x`.
#[test]
fn expansion_naming() {
    let r = |replacement: &str| RelabelConfig {
        source_labels: src(&["a"]),
        regex: "(f)(o+)".into(),
        target_label: "t".into(),
        replacement: replacement.into(),
        ..rule(Action::Replace)
    };
    let get = |repl: &str| run(&[r(repl)], &ABC).unwrap().get("t").map(str::to_owned);
    assert_eq!(get("${1}x"), Some("fx".into()));
    assert_eq!(get("$1x"), None);
    assert_eq!(get("$1-$2"), Some("f-oo".into()));
    assert_eq!(get("$$1"), Some("$1".into()));
    assert_eq!(get("$0"), Some("foo".into()));
    let named = RelabelConfig {
        regex: "(?P<first>f)(?P<rest>o+)".into(),
        ..r("$rest.$first")
    };
    assert_eq!(run(&[named], &ABC).unwrap().get("t"), Some("oo.f"));
}

/// `keep`: "Drop targets for which regex does not match the concatenated source_labels."
#[test]
fn keep() {
    let keep = |regex: &str| RelabelConfig {
        source_labels: src(&["a"]),
        regex: regex.into(),
        ..rule(Action::Keep)
    };
    assert!(run(&[keep("f.*")], &ABC).is_some());
    assert!(run(&[keep("no-match")], &ABC).is_none());
    // Anchored: `f` alone does not match "foo".
    assert!(run(&[keep("f")], &ABC).is_none());
    // A missing label is "", which `(.*)` matches.
    let missing = RelabelConfig {
        source_labels: src(&["nope"]),
        ..rule(Action::Keep)
    };
    assert!(run(&[missing], &ABC).is_some());
}

/// `drop`: "Drop targets for which regex matches the concatenated source_labels."
#[test]
fn drop() {
    let drop = |regex: &str| RelabelConfig {
        source_labels: src(&["a"]),
        regex: regex.into(),
        ..rule(Action::Drop)
    };
    assert!(run(&[drop(".*o.*")], &ABC).is_none());
    assert!(run(&[drop("o$")], &ABC).is_some());
    // The first rule that drops stops processing.
    let later = RelabelConfig {
        source_labels: src(&["a"]),
        target_label: "after".into(),
        ..rule(Action::Replace)
    };
    let mut l = labels(&ABC);
    let rules = RelabelRules::new(&[drop("foo"), later]).unwrap();
    assert!(!rules.process(&mut l));
    assert_eq!(l.get("after"), None);
}

/// `keepequal`: "Drop targets for which the concatenated source_labels do not match
/// target_label." `dropequal`: "Drop targets for which the concatenated source_labels do match
/// target_label."
#[test]
fn keepequal_dropequal() {
    let input = [
        ("__tmp_port", "1234"),
        ("__port1", "1234"),
        ("__port2", "5678"),
    ];
    let eq = |action, target: &str| RelabelConfig {
        source_labels: src(&["__tmp_port"]),
        target_label: target.into(),
        ..rule(action)
    };
    assert!(run(&[eq(Action::KeepEqual, "__port1")], &input).is_some());
    assert!(run(&[eq(Action::KeepEqual, "__port2")], &input).is_none());
    assert!(run(&[eq(Action::DropEqual, "__port1")], &input).is_none());
    assert!(run(&[eq(Action::DropEqual, "__port2")], &input).is_some());
    // A missing target is "", equal to a missing source.
    let missing = RelabelConfig {
        source_labels: src(&["nope"]),
        target_label: "absent".into(),
        ..rule(Action::KeepEqual)
    };
    assert!(run(&[missing], &input).is_some());
}

/// `hashmod`: "Set target_label to the modulus of a hash of the concatenated source_labels."
#[test]
fn hashmod() {
    let h = |sources: &[&str], modulus| RelabelConfig {
        source_labels: src(sources),
        target_label: "d".into(),
        modulus,
        ..rule(Action::HashMod)
    };
    let get = |r| run(&[r], &ABC).unwrap().get("d").map(str::to_owned);
    assert_eq!(get(h(&["c"], 1000)), Some("976".into()));
    assert_eq!(get(h(&["a"], 1000)), Some("696".into()));
    assert_eq!(get(h(&["a", "b"], 7)), Some("6".into()));
    assert_eq!(get(h(&["nope"], 10)), Some("8".into()));
    // The regex is ignored.
    let with_regex = RelabelConfig {
        regex: "nomatch".into(),
        ..h(&["c"], 1000)
    };
    assert_eq!(get(with_regex), Some("976".into()));
}

/// `labelmap`: "Match regex against all source label names … Then copy the values of the
/// matching labels to label names given by replacement with match group references." The
/// documented use: `__meta_kubernetes_node_label_(.+)`.
#[test]
fn labelmap() {
    let r = RelabelConfig {
        regex: "__meta_kubernetes_node_label_(.+)".into(),
        ..rule(Action::LabelMap)
    };
    let out = run(
        &[r],
        &[
            ("__meta_kubernetes_node_label_zone", "eu-1"),
            ("__meta_kubernetes_node_label_arch", "arm64"),
            ("job", "node"),
        ],
    )
    .unwrap();
    assert_eq!(out.get("zone"), Some("eu-1"));
    assert_eq!(out.get("arch"), Some("arm64"));
    // The originals stay.
    assert_eq!(out.get("__meta_kubernetes_node_label_zone"), Some("eu-1"));
    assert_eq!(out.len(), 5);

    // Over a snapshot: labels the rule adds are not mapped again.
    let all = RelabelConfig {
        regex: "(.*)".into(),
        replacement: "x_${1}".into(),
        ..rule(Action::LabelMap)
    };
    let out = run(&[all], &[("a", "1"), ("b", "2")]).unwrap();
    assert_eq!(
        out,
        labels(&[("a", "1"), ("b", "2"), ("x_a", "1"), ("x_b", "2")])
    );
}

/// `labeldrop`: "Any label that matches will be removed from the set of labels."
/// `labelkeep`: "Any label that does not match will be removed from the set of labels."
#[test]
fn labeldrop_labelkeep() {
    let drop = RelabelConfig {
        regex: "(b.*)".into(),
        ..rule(Action::LabelDrop)
    };
    assert_eq!(
        run(&[drop], &ABC).unwrap(),
        labels(&[("a", "foo"), ("c", "baz")])
    );
    let keep = RelabelConfig {
        regex: "(b.*)".into(),
        ..rule(Action::LabelKeep)
    };
    assert_eq!(run(&[keep], &ABC).unwrap(), labels(&[("b", "bar")]));
    // Alloy emits a set that ends up empty (it is not dropped).
    let keep_none = RelabelConfig {
        regex: "zzz".into(),
        ..rule(Action::LabelKeep)
    };
    assert_eq!(run(&[keep_none], &ABC), Some(Labels::new()));
}

/// `lowercase` / `uppercase`: "Maps the concatenated source_labels to their lower (upper) case."
#[test]
fn lowercase_uppercase() {
    let case = |action, target: &str| RelabelConfig {
        source_labels: src(&["foo"]),
        target_label: target.into(),
        ..rule(action)
    };
    let input = [("foo", "bAr123Foo")];
    let out = run(
        &[
            case(Action::Lowercase, "lower"),
            case(Action::Uppercase, "upper"),
        ],
        &input,
    )
    .unwrap();
    assert_eq!(out.get("lower"), Some("bar123foo"));
    assert_eq!(out.get("upper"), Some("BAR123FOO"));
    // Character by character, as Go maps case: `ß` stays, a final sigma is not special.
    let out = run(
        &[
            case(Action::Lowercase, "lower"),
            case(Action::Uppercase, "upper"),
        ],
        &[("foo", "Straße ΟΔΟΣ")],
    )
    .unwrap();
    assert_eq!(out.get("upper"), Some("STRAßE ΟΔΟΣ"));
    assert_eq!(out.get("lower"), Some("straße οδοσ"));
    // A missing source deletes the target.
    let out = run(&[case(Action::Lowercase, "foo2")], &[("foo2", "x")]).unwrap();
    assert_eq!(out.get("foo2"), None);
}

/// Invalid rules are refused when compiled, naming the rule and the problem.
#[test]
fn validation() {
    let err = |rules: &[RelabelConfig]| RelabelRules::new(rules).unwrap_err();
    let ok = rule(Action::Keep);

    let e = err(&[ok.clone(), rule(Action::Replace)]);
    assert_eq!(
        e,
        RelabelError::MissingTargetLabel {
            index: 1,
            action: Action::Replace
        }
    );
    assert_eq!(
        e.to_string(),
        "relabel rule 1: action replace requires a target_label"
    );

    let bad_regex = RelabelConfig {
        regex: "a(b".into(),
        ..ok.clone()
    };
    let e = err(&[bad_regex]);
    assert!(
        matches!(e, RelabelError::InvalidRegex { index: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("a(b"));
    // Rust would accept these; Go refuses them.
    for go_invalid in ["a**", "a{1001}", "(?x)a", r"\1"] {
        let r = RelabelConfig {
            regex: go_invalid.into(),
            ..ok.clone()
        };
        assert!(
            matches!(err(&[r]), RelabelError::InvalidRegex { .. }),
            "{go_invalid}"
        );
    }

    for action in [
        Action::HashMod,
        Action::Lowercase,
        Action::Uppercase,
        Action::KeepEqual,
        Action::DropEqual,
    ] {
        assert!(matches!(
            err(&[rule(action)]),
            RelabelError::MissingTargetLabel { .. }
        ));
        let r = RelabelConfig {
            target_label: "1bad".into(),
            modulus: 1,
            ..rule(action)
        };
        assert!(
            matches!(err(&[r]), RelabelError::InvalidTargetLabel { .. }),
            "{action}"
        );
    }
    let r = RelabelConfig {
        target_label: "${1}bad-name".into(),
        ..rule(Action::Replace)
    };
    assert!(matches!(err(&[r]), RelabelError::InvalidTargetLabel { .. }));
    for fine in ["x_${1}", "$1", "a$1b", "${name}_z"] {
        let r = RelabelConfig {
            target_label: fine.into(),
            ..rule(Action::Replace)
        };
        assert!(RelabelRules::new(&[r]).is_ok(), "{fine}");
    }

    let r = RelabelConfig {
        target_label: "d".into(),
        ..rule(Action::HashMod)
    };
    assert_eq!(err(&[r]), RelabelError::ZeroModulus { index: 0 });

    let r = RelabelConfig {
        target_label: "d".into(),
        replacement: "x".into(),
        ..rule(Action::Lowercase)
    };
    assert!(matches!(
        err(&[r]),
        RelabelError::FieldNotAllowed {
            field: "replacement",
            ..
        }
    ));
    let r = RelabelConfig {
        target_label: "d".into(),
        regex: "x".into(),
        ..rule(Action::KeepEqual)
    };
    assert!(matches!(
        err(&[r]),
        RelabelError::FieldNotAllowed { field: "regex", .. }
    ));
    let r = RelabelConfig {
        source_labels: src(&["a"]),
        ..rule(Action::LabelDrop)
    };
    let e = err(&[r]);
    assert!(matches!(
        e,
        RelabelError::FieldNotAllowed {
            field: "source_labels",
            ..
        }
    ));
    assert!(e.to_string().contains("only regex"), "{e}");
    let r = RelabelConfig {
        target_label: "t".into(),
        ..rule(Action::LabelKeep)
    };
    assert!(matches!(
        err(&[r]),
        RelabelError::FieldNotAllowed {
            field: "target_label",
            ..
        }
    ));
    let r = RelabelConfig {
        replacement: "bad-name".into(),
        ..rule(Action::LabelMap)
    };
    assert!(matches!(
        err(&[r]),
        RelabelError::InvalidReplacement { index: 0, .. }
    ));
}

#[test]
fn empty_rules_pass_everything() {
    let rules = RelabelRules::empty();
    assert!(rules.is_empty());
    assert_eq!(rules.apply(labels(&ABC)), Some(labels(&ABC)));
}

/// Templates under UTF-8 names, with the case data of Alloy's `TestRelabelValidate` and
/// `TestTargetLabelValidity` (`internal/component/common/relabel/relabel_test.go`) and
/// Prometheus' `TestTargetLabelLegacyValidity` (`model/relabel/relabel_test.go`): a `replace`
/// target with `$` and every `labelmap` replacement must match the legacy template pattern
/// whatever the name validation; a literal target is a name under the scheme in force.
#[test]
fn utf8_templates_follow_alloy() {
    let compile = |r: RelabelConfig| RelabelRules::with_validation(&[r], NameValidation::Utf8);
    let replace = |target: &str| RelabelConfig {
        source_labels: src(&["a"]),
        regex: "some-([^-]+)-([^,]+)".into(),
        replacement: "${1}".into(),
        target_label: target.into(),
        ..rule(Action::Replace)
    };
    let labelmap = |replacement: &str| RelabelConfig {
        regex: "__meta_(.+)".into(),
        replacement: replacement.into(),
        ..rule(Action::LabelMap)
    };

    // Alloy's TestRelabelValidate (UTF-8 naming): `${3}` is fine, `0${3}` and `-${3}` are
    // refused. (Prometheus 3 accepts the last two under UTF-8; Alloy's discovery.relabel does
    // not, and pyro follows Alloy.)
    assert!(compile(replace("${3}")).is_ok());
    for bad in ["0${3}", "-${3}"] {
        let e = compile(replace(bad)).unwrap_err();
        assert_eq!(
            e,
            RelabelError::InvalidTargetLabel {
                index: 0,
                action: Action::Replace,
                target_label: bad.into(),
                rule: NameRule::LegacyTemplate,
            }
        );
        // The message carries Alloy's `"-${3}" is invalid 'target_label' for replace action`
        // facts: the value, the field, the action, and which rule.
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "{bad:?} is an invalid target_label for action replace"
            )),
            "{msg}"
        );
        assert!(
            msg.contains(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$"),
            "{msg}"
        );
    }
    // Same case, lowercase with `${3}`: a literal name under UTF-8 (no template check), refused
    // as a legacy name (Prometheus' TestRelabelValidate, both schemes).
    let lower = RelabelConfig {
        target_label: "${3}".into(),
        ..rule(Action::Lowercase)
    };
    assert!(compile(lower.clone()).is_ok());
    assert_eq!(
        RelabelRules::new(&[lower]).unwrap_err().to_string(),
        r#"relabel rule 0: "${3}" is an invalid target_label for action lowercase: it must be a legacy label name [a-zA-Z_][a-zA-Z0-9_]*"#
    );
    // Prometheus' TestRelabel UTF-8 case: a literal dotted target is accepted.
    assert!(compile(replace("utf-8.label")).is_ok());

    // The template pattern's cases (TestTargetLabelValidity / TestTargetLabelLegacyValidity).
    let cases = [
        ("-label", false),
        ("label", true),
        ("label${1}", true),
        ("${1}label", true),
        ("${1}", true),
        ("${", false),
        ("$", false),
        ("${}", false),
        ("foo${", false),
        ("$1", true),
        ("asd$2asd", true),
        ("-foo${1}bar-", false),
        ("bar.foo${1}bar", false),
        ("_${1}_", true),
        ("foo${bar}foo", true),
    ];
    for (s, valid) in cases {
        // labelmap: the pattern decides, under both schemes.
        for names in [NameValidation::Legacy, NameValidation::Utf8] {
            let got = RelabelRules::with_validation(&[labelmap(s)], names);
            assert_eq!(got.is_ok(), valid, "labelmap {s:?} {names:?}");
            if !valid {
                assert_eq!(
                    got.unwrap_err(),
                    RelabelError::InvalidReplacement {
                        index: 0,
                        replacement: s.into(),
                        rule: NameRule::LegacyTemplate,
                    }
                );
            }
        }
        // replace under UTF-8: the pattern decides for a template; `-label` holds no `$` and
        // is a valid UTF-8 name.
        let expected = valid || !s.contains('$');
        assert_eq!(compile(replace(s)).is_ok(), expected, "replace {s:?}");
        // Under legacy names the pattern decides everything.
        assert_eq!(
            RelabelRules::new(&[replace(s)]).is_ok(),
            valid,
            "legacy {s:?}"
        );
    }
    // The issue's examples.
    assert!(compile(replace("-${1}")).is_err());
    assert!(compile(labelmap("meta.$1")).is_err());
    // What is accepted still works: `${1}` maps `__meta_x` to `x` under UTF-8.
    let rules = compile(labelmap("${1}")).unwrap();
    let out = rules.apply(labels(&[("__meta_x", "v")])).unwrap();
    assert_eq!(out.get("x"), Some("v"));
}
