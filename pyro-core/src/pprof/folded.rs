use std::collections::HashMap;

use super::Profile;

/// One flattened stack: frame names root first, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldedStack {
    /// Frame names, root first (inlined functions expanded, callers before callees).
    pub frames: Vec<String>,
    /// The summed value.
    pub value: i64,
}

/// Flattens `profile` into stacks (root first) with the values of sample type `sample_index`,
/// merging equal stacks and dropping zero values. Frames without a function name show as
/// `[unknown]`, or `0x<address>` when the address is known. Output is sorted by stack.
pub fn folded(profile: &Profile, sample_index: usize) -> Vec<FoldedStack> {
    let functions: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| (f.id, profile.string(f.name)))
        .collect();
    let locations: HashMap<u64, Vec<String>> = profile
        .location
        .iter()
        .map(|l| {
            // `line` is innermost first; a folded stack wants callers first.
            let mut names: Vec<String> = l
                .line
                .iter()
                .rev()
                .map(|ln| match functions.get(&ln.function_id) {
                    Some(n) if !n.is_empty() => (*n).to_owned(),
                    _ => "[unknown]".to_owned(),
                })
                .collect();
            if names.is_empty() {
                names.push(if l.address == 0 {
                    "[unknown]".to_owned()
                } else {
                    format!("0x{:x}", l.address)
                });
            }
            (l.id, names)
        })
        .collect();
    let mut merged: HashMap<Vec<String>, i64> = HashMap::new();
    for s in &profile.sample {
        let Some(&v) = s.value.get(sample_index) else {
            continue;
        };
        if v == 0 {
            continue;
        }
        let frames: Vec<String> = s
            .location_id
            .iter()
            .rev()
            .flat_map(|id| {
                locations
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| vec!["[unknown]".to_owned()])
            })
            .collect();
        let e = merged.entry(frames).or_insert(0);
        *e = e.saturating_add(v);
    }
    let mut out: Vec<FoldedStack> = merged
        .into_iter()
        .map(|(frames, value)| FoldedStack { frames, value })
        .collect();
    out.sort_by(|a, b| a.frames.cmp(&b.frames));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::ProfileBuilder;

    #[test]
    fn flattens_inlined_frames_root_first() {
        let mut b = ProfileBuilder::new(&[("samples", "count")]);
        let m = b.add_mapping(0, 100, 0, "x", "");
        let inner = b.function("inlined", "");
        let outer = b.function("caller", "");
        let root = b.frame("main");
        let leaf = b.address_location(m, 10, &[inner, outer]);
        b.add_sample(&[leaf, root], &[4]);
        b.add_sample(&[root], &[0]);
        let stacks = folded(&b.build(), 0);
        assert_eq!(
            stacks,
            [FoldedStack {
                frames: vec!["main".into(), "caller".into(), "inlined".into()],
                value: 4
            }]
        );
    }
}
