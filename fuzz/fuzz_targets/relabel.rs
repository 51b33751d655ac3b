//! Relabel rules never panic when compiled from any configuration (Go regex translation and
//! template checks included) or applied to any labels, under both name validations.
//!
//! Input: a JSON array of rules as Alloy's `rule` blocks (`RelabelConfig`), a NUL byte, then
//! labels as `name=value` lines. When the rules are not valid JSON the whole first part is used
//! as the `regex` of a `keep`, a `labelmap` and a `replace` rule, so that the Go-syntax
//! translator sees raw bytes too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_core::Labels;
use pyro_discovery::relabel::{Action, NameValidation, RelabelConfig, RelabelRules};

fuzz_target!(|data: &[u8]| {
    let (rules, labels) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let rules: Vec<RelabelConfig> = serde_json::from_slice(rules).unwrap_or_else(|_| {
        let regex = String::from_utf8_lossy(rules).into_owned();
        let base = RelabelConfig {
            regex,
            ..RelabelConfig::default()
        };
        vec![
            RelabelConfig {
                action: Action::Keep,
                source_labels: vec!["a".into(), "b".into()],
                ..base.clone()
            },
            RelabelConfig {
                action: Action::LabelMap,
                ..base.clone()
            },
            RelabelConfig {
                source_labels: vec!["a".into()],
                target_label: "${1}".into(),
                replacement: "${2}".into(),
                ..base
            },
        ]
    });
    let labels = Labels::from_iter(String::from_utf8_lossy(labels).lines().filter_map(|l| {
        let (n, v) = l.split_once('=')?;
        Some((n.to_owned(), v.to_owned()))
    }));
    for names in [NameValidation::Legacy, NameValidation::Utf8] {
        let Ok(compiled) = RelabelRules::with_validation(&rules, names) else {
            continue;
        };
        assert_eq!(compiled.len(), rules.len());
        if let Some(out) = compiled.apply(labels.clone()) {
            let names: Vec<&str> = out.iter().map(|l| l.name()).collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
            assert!(out.iter().all(|l| !l.name().is_empty()));
        }
    }
});
