//! Differential test against Go itself: the relabel engine's regular expressions, `$`
//! expansion and case mapping must agree with Go's `regexp` and `strings` packages (what
//! Prometheus and Alloy run) on the places where Go and Rust differ. Needs `go`
//! (`pyro_testkit::tool`, required in CI).

use std::io::Write;
use std::process::{Command, Stdio};

use pyro_core::Labels;
use pyro_discovery::relabel::{Action, RelabelConfig, RelabelRules};
use serde::{Deserialize, Serialize};

const GO_SOURCE: &str = include_str!("go/regexp_reference.go");

#[derive(Serialize)]
struct Case<'a> {
    re: &'a str,
    #[serde(rename = "in")]
    input: &'a str,
    tpl: &'a str,
}

#[derive(Deserialize, Debug)]
struct GoResult {
    ok: bool,
    #[serde(rename = "match")]
    matched: bool,
    out: String,
    upper: String,
    lower: String,
}

/// (regex, input, replacement template)
const CASES: &[(&str, &str, &str)] = &[
    // Perl classes are ASCII in Go.
    (r"\d+", "0123", "$0"),
    (r"\d+", "٣٤", "$0"),
    (r"\w+", "é", "$0"),
    (r"\W", "é", "$0"),
    (r"\s", "\u{a0}", "x"),
    (r"\s", "\u{b}", "x"),
    (r"\s+", " \t\r\n\u{c}", "x"),
    (r"[\d\s]+", "1 2", "$0"),
    (r"[^\D]", "7", "$0"),
    (r"x\b.", "xé", "$0"),
    (r"x\B.", "xé", "$0"),
    (r"\pN+", "١٢", "$0"),
    (r"\pL+", "éa", "$0"),
    (r"\p{Greek}+", "αβ", "$0"),
    (r"\p{^Greek}", "a", "$0"),
    (r"\PL", "1", "$0"),
    // Braces.
    ("a{,3}", "a{,3}", "$0"),
    ("a{", "a{", "$0"),
    ("a{x}", "a{x}", "$0"),
    ("x}", "x}", "$0"),
    ("a{2}", "aa", "$0"),
    ("a{2,}", "aaaa", "$0"),
    ("(a{1,2}?)(a*)", "aaa", "$1|$2"),
    ("a{1001}", "a", ""),
    ("x{1,1001}", "x", ""),
    ("a{3,2}", "aaa", ""),
    ("x{0}", "", "ok"),
    // Classes.
    ("[[]", "[", "$0"),
    ("[a&&b]+", "a&b", "$0"),
    ("[a~~b]+", "~", "$0"),
    ("[a--b]", "a", "$0"),
    ("[]a]+", "]a", "$0"),
    ("[^]a]", "b", "$0"),
    ("[a-]+", "-a", "$0"),
    ("[[:alpha:]]+", "ab", "$0"),
    ("[[:^alpha:]]", "1", "$0"),
    ("[[:word:]]+", "a_1", "$0"),
    ("[[:foo:]]", "a", "$0"),
    (r"[\d-z]", "5", "$0"),
    ("[z-a]", "a", "$0"),
    ("[a", "a", "$0"),
    // Escapes.
    (r"\<a\>", "<a>", "$0"),
    (r"\Q.*+\E", ".*+", "$0"),
    (r"\Qa.b", "a.b", "$0"),
    (r"\101", "A", "$0"),
    (r"\0", "\0", "x"),
    (r"\x41\x{42}", "AB", "$0"),
    (r"\1", "a", "$0"),
    (r"\8", "8", "$0"),
    (r"\e", "e", "$0"),
    (r"\Z", "", "x"),
    (r"\z", "", "x"),
    (r"\#\&\~", "#&~", "$0"),
    // Repetition and flags.
    ("a**", "a", ""),
    ("a+*", "a", ""),
    ("a{2}*", "aa", ""),
    ("a*??", "a", ""),
    ("a{2}{3}", "aaaaaa", ""),
    ("a*?", "aa", "$0"),
    ("(a*)*", "", "[$1]"),
    ("(a*)+", "", "[$1]"),
    ("(a|b)*", "ab", "[$1]"),
    ("(a|ab)(c|bcd)(d*)", "abcd", "$1|$2|$3"),
    ("(?U)(a+)(a*)", "aaa", "$1|$2"),
    ("(?x)a", "a", ""),
    ("(?i-)a", "a", ""),
    ("(?)a", "a", "$0"),
    ("(?:a)", "a", "$0"),
    ("(?i)k", "\u{212a}", "$0"),
    ("(?i)straße", "STRASSE", "$0"),
    ("(?i)ΣΑΣ", "σας", "$0"),
    ("(?i-s:a.)", "a\n", "$0"),
    ("(?m)a$", "a", "$0"),
    ("a$", "a\n", "$0"),
    ("a.b", "a\nb", "$0"),
    ("(?P=n)", "a", ""),
    // Names and expansion.
    ("(?P<1x>a)", "a", "$1x"),
    ("(?P<n>a)|(?P<n>b)", "b", "$n"),
    ("(?P<first>f)(?P<rest>o+)", "foo", "$rest.${first}"),
    ("(f)(o+)", "foo", "$1x"),
    ("(f)(o+)", "foo", "${1}x"),
    ("(f)(o+)", "foo", "$$1"),
    ("(f)(o+)", "foo", "$"),
    ("(f)(o+)", "foo", "a$-b"),
    ("(f)(o+)", "foo", "${1"),
    ("(f)(o+)", "foo", "$01"),
    ("(f)(o+)", "foo", "$1é"),
    ("(f)(o+)", "foo", "$9"),
    ("(f)(o+)", "foo", "$0"),
    ("(f)(o+)", "foo", "${2}${1}"),
    ("(f)(x)?(o+)", "foo", "[$2]"),
    ("(.*)", "anything", "$1"),
    // Case mapping (the replacement is irrelevant).
    ("(.*)", "Straße ΟΔΟΣ", "$1"),
    ("(.*)", "ǅ İ ᾀ ﬀ ŉ ǰ", "$1"),
    ("(.*)", "bAr123Foo", "$1"),
];

#[test]
fn regexp_expand_and_case_agree_with_go() {
    let Some(go) = pyro_testkit::tool("go") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("main.go");
    std::fs::write(&src, GO_SOURCE).unwrap();
    let mut child = Command::new(go)
        .arg("run")
        .arg(&src)
        .env("HOME", dir.path())
        .env("GOCACHE", dir.path().join("cache"))
        .env("GO111MODULE", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for &(re, input, tpl) in CASES {
            let case = Case { re, input, tpl };
            writeln!(stdin, "{}", serde_json::to_string(&case).unwrap()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "go run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<GoResult> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), CASES.len());

    let mut mismatches = Vec::new();
    for (&(re, input, tpl), go) in CASES.iter().zip(&results) {
        let replace = RelabelConfig {
            source_labels: vec!["v".into()],
            regex: re.into(),
            target_label: "t".into(),
            replacement: tpl.into(),
            ..RelabelConfig::default()
        };
        let case = |action| RelabelConfig {
            source_labels: vec!["v".into()],
            target_label: "t".into(),
            action,
            ..RelabelConfig::default()
        };
        let ours = RelabelRules::new(&[replace]);
        if ours.is_ok() != go.ok {
            mismatches.push(format!(
                "{re:?}: go compiles={} ours={:?}",
                go.ok,
                ours.err()
            ));
            continue;
        }
        // The input as a label value; an empty value means "absent", which is "" too.
        let labels = Labels::from_iter([("v", input)]);
        if let Ok(rules) = ours {
            let got = rules.apply(labels.clone()).unwrap();
            // Go: no match ⇒ nothing set; an empty expansion deletes the label.
            let want = (go.matched && !go.out.is_empty()).then_some(go.out.as_str());
            if got.get("t") != want {
                mismatches.push(format!(
                    "{re:?} on {input:?} with {tpl:?}: go {want:?} (match {}), ours {:?}",
                    go.matched,
                    got.get("t")
                ));
            }
        }
        for (action, want) in [
            (Action::Uppercase, &go.upper),
            (Action::Lowercase, &go.lower),
        ] {
            let rules = RelabelRules::new(&[case(action)]).unwrap();
            let got = rules.apply(labels.clone()).unwrap();
            let want = (!want.is_empty()).then_some(want.as_str());
            if got.get("t") != want {
                mismatches.push(format!(
                    "{action} {input:?}: go {want:?}, ours {:?}",
                    got.get("t")
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from Go:\n{}",
        mismatches.len(),
        CASES.len(),
        mismatches.join("\n")
    );
}
