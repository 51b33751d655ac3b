use std::collections::HashMap;

use super::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// Builds a pprof [`Profile`] incrementally: strings, functions and locations are interned
/// (each distinct one is stored once) and samples with the same stack and labels are merged
/// (their values added).
///
/// ```
/// use pyro_core::pprof::{ProfileBuilder, encode_gzip};
///
/// // A CPU profile as the eBPF collector makes it: 97 Hz, value = count × period.
/// let mut b = ProfileBuilder::cpu(97);
/// let period = b.period();
/// b.add_folded(&["myapp", "main", "work"], &[3 * period]);
/// b.add_folded(&["myapp", "main", "work"], &[2 * period]); // merged with the first
/// b.add_folded(&["myapp", "main", "idle"], &[period]);
/// let profile = b.build();
/// assert_eq!(profile.sample.len(), 2);
/// assert_eq!(profile.sample[0].value, [5 * period]);
/// let bytes = encode_gzip(&profile, 1);
/// # assert!(!bytes.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct ProfileBuilder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64), u64>,
    named_locations: HashMap<u64, u64>,
    address_locations: HashMap<(u64, u64), u64>,
    samples: HashMap<SampleKey, usize>,
}

/// What the locations of a mapping carry (the pprof `Mapping.has_*` fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingFlags {
    /// Locations name their functions.
    pub has_functions: bool,
    /// Functions carry source file names.
    pub has_filenames: bool,
    /// Lines carry line numbers.
    pub has_line_numbers: bool,
    /// Locations list inlined functions as extra lines.
    pub has_inline_frames: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SampleKey {
    stack: Vec<u64>,
    labels: Vec<(i64, i64, i64, i64)>,
}

impl ProfileBuilder {
    /// A builder for profiles whose samples carry one value per `(type, unit)` in
    /// `sample_types`.
    pub fn new(sample_types: &[(&str, &str)]) -> Self {
        let mut b = Self {
            profile: Profile {
                string_table: vec![String::new()],
                ..Profile::default()
            },
            strings: HashMap::from([(String::new(), 0)]),
            functions: HashMap::new(),
            named_locations: HashMap::new(),
            address_locations: HashMap::new(),
            samples: HashMap::new(),
        };
        b.profile.sample_type = sample_types
            .iter()
            .map(|(t, u)| b.value_type(t, u))
            .collect();
        b
    }

    /// A CPU profile as Pyroscope expects one: sample type `cpu/nanoseconds`, period type
    /// `cpu/nanoseconds`, period `1e9 / sample_rate_hz` (integer division, as Alloy does).
    /// A rate of 0 is treated as 1.
    pub fn cpu(sample_rate_hz: u32) -> Self {
        let mut b = Self::new(&[("cpu", "nanoseconds")]);
        b.set_period(
            "cpu",
            "nanoseconds",
            1_000_000_000 / i64::from(sample_rate_hz.max(1)),
        );
        b
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(ty),
            unit: self.string(unit),
        }
    }

    /// Sets the period type and period.
    pub fn set_period(&mut self, ty: &str, unit: &str, period: i64) -> &mut Self {
        self.profile.period_type = Some(self.value_type(ty, unit));
        self.profile.period = period;
        self
    }

    /// The period set so far.
    pub fn period(&self) -> i64 {
        self.profile.period
    }

    /// Sets the collection start (ns since the epoch) and duration (ns).
    pub fn set_time(&mut self, time_nanos: i64, duration_nanos: i64) -> &mut Self {
        self.profile.time_nanos = time_nanos;
        self.profile.duration_nanos = duration_nanos;
        self
    }

    /// Sets the default sample type by its type name.
    pub fn set_default_sample_type(&mut self, ty: &str) -> &mut Self {
        self.profile.default_sample_type = self.string(ty);
        self
    }

    /// Adds a comment.
    pub fn add_comment(&mut self, comment: &str) -> &mut Self {
        let i = self.string(comment);
        self.profile.comment.push(i);
        self
    }

    /// Interns `s`, returning its string-table index.
    pub fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    /// Interns a function by name and file name, returning its id.
    pub fn function(&mut self, name: &str, filename: &str) -> u64 {
        self.function_at(name, filename, 0)
    }

    /// Interns a function by name, source file name and the line it starts at
    /// (`Function.start_line`, 0 when unknown), returning its id.
    pub fn function_at(&mut self, name: &str, filename: &str, start_line: i64) -> u64 {
        let key = (self.string(name), self.string(filename), start_line);
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name: key.0,
            system_name: key.0,
            filename: key.1,
            start_line,
        });
        self.functions.insert(key, id);
        id
    }

    /// Adds a mapping, returning its id.
    pub fn add_mapping(
        &mut self,
        memory_start: u64,
        memory_limit: u64,
        file_offset: u64,
        filename: &str,
        build_id: &str,
    ) -> u64 {
        let id = self.profile.mapping.len() as u64 + 1;
        let (filename, build_id) = (self.string(filename), self.string(build_id));
        self.profile.mapping.push(Mapping {
            id,
            memory_start,
            memory_limit,
            file_offset,
            filename,
            build_id,
            has_functions: true,
            ..Mapping::default()
        });
        id
    }

    /// Adds a mapping whose `has_*` fields say what its locations carry, returning its id.
    pub fn add_mapping_with_flags(
        &mut self,
        memory_start: u64,
        memory_limit: u64,
        file_offset: u64,
        filename: &str,
        build_id: &str,
        flags: MappingFlags,
    ) -> u64 {
        let id = self.add_mapping(memory_start, memory_limit, file_offset, filename, build_id);
        let m = &mut self.profile.mapping[(id - 1) as usize];
        m.has_functions = flags.has_functions;
        m.has_filenames = flags.has_filenames;
        m.has_line_numbers = flags.has_line_numbers;
        m.has_inline_frames = flags.has_inline_frames;
        id
    }

    /// The location at `address` in mapping `mapping_id` with one `Line` per `(function id,
    /// line number)` in `lines`, innermost inlined function first. Interned by
    /// `(mapping_id, address)` like [`address_location`](Self::address_location).
    pub fn line_location(&mut self, mapping_id: u64, address: u64, lines: &[(u64, i64)]) -> u64 {
        if let Some(&id) = self.address_locations.get(&(mapping_id, address)) {
            return id;
        }
        let id = self.push_location(mapping_id, address, Vec::new());
        self.profile.location[(id - 1) as usize].line = lines
            .iter()
            .map(|&(function_id, line)| Line {
                function_id,
                line,
                ..Line::default()
            })
            .collect();
        self.address_locations.insert((mapping_id, address), id);
        id
    }

    /// The location of a function with no address (one per function; how the legacy eBPF
    /// engine and the text formats describe frames), returning its id.
    pub fn function_location(&mut self, function_id: u64) -> u64 {
        if let Some(&id) = self.named_locations.get(&function_id) {
            return id;
        }
        let id = self.push_location(0, 0, vec![function_id]);
        self.named_locations.insert(function_id, id);
        id
    }

    /// The location of a named frame without an address (interns function and location).
    pub fn frame(&mut self, name: &str) -> u64 {
        let f = self.function(name, "");
        self.function_location(f)
    }

    /// The location at `address` in mapping `mapping_id`, with `functions` the (inlined)
    /// functions there, innermost first. Interned by `(mapping_id, address)`: the functions
    /// given the first time win.
    pub fn address_location(&mut self, mapping_id: u64, address: u64, functions: &[u64]) -> u64 {
        if let Some(&id) = self.address_locations.get(&(mapping_id, address)) {
            return id;
        }
        let id = self.push_location(mapping_id, address, functions.to_vec());
        self.address_locations.insert((mapping_id, address), id);
        id
    }

    fn push_location(&mut self, mapping_id: u64, address: u64, functions: Vec<u64>) -> u64 {
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            address,
            line: functions
                .into_iter()
                .map(|function_id| Line {
                    function_id,
                    ..Line::default()
                })
                .collect(),
            is_folded: false,
        });
        id
    }

    /// Adds a sample: `stack` is location ids **leaf first** (pprof order), `values` one per
    /// sample type. A sample with the same stack (and no labels) as an earlier one is merged
    /// into it. Extra or missing values are cut or padded with 0 so the profile stays valid.
    pub fn add_sample(&mut self, stack: &[u64], values: &[i64]) {
        self.add_sample_with_labels(stack, values, &[]);
    }

    /// Adds a sample with string labels (`key`, `value`); merged only with samples having the
    /// same stack and the same labels.
    pub fn add_sample_with_labels(
        &mut self,
        stack: &[u64],
        values: &[i64],
        labels: &[(&str, &str)],
    ) {
        let labels: Vec<(i64, i64, i64, i64)> = labels
            .iter()
            .map(|(k, v)| (self.string(k), self.string(v), 0, 0))
            .collect();
        self.merge_sample(stack, values, labels);
    }

    fn merge_sample(&mut self, stack: &[u64], values: &[i64], labels: Vec<(i64, i64, i64, i64)>) {
        let width = self.profile.sample_type.len();
        let key = SampleKey {
            stack: stack.to_vec(),
            labels,
        };
        if let Some(&i) = self.samples.get(&key) {
            for (acc, v) in self.profile.sample[i].value.iter_mut().zip(values) {
                *acc = acc.saturating_add(*v);
            }
            return;
        }
        let mut value: Vec<i64> = values.iter().copied().take(width).collect();
        value.resize(width, 0);
        self.profile.sample.push(Sample {
            location_id: key.stack.clone(),
            value,
            label: key
                .labels
                .iter()
                .map(|&(key, str, num, num_unit)| Label {
                    key,
                    str,
                    num,
                    num_unit,
                })
                .collect(),
        });
        self.samples.insert(key, self.profile.sample.len() - 1);
    }

    /// Adds a sample from frame names given **root first** (the folded-stack order), creating
    /// one function and location per distinct name.
    pub fn add_folded<S: AsRef<str>>(&mut self, frames_root_first: &[S], values: &[i64]) {
        let stack: Vec<u64> = frames_root_first
            .iter()
            .rev()
            .map(|f| self.frame(f.as_ref()))
            .collect();
        self.add_sample(&stack, values);
    }

    /// Number of samples so far (after merging).
    pub fn sample_count(&self) -> usize {
        self.profile.sample.len()
    }

    /// The finished profile.
    pub fn build(self) -> Profile {
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::check_valid;

    #[test]
    fn interning_and_merging() {
        let mut b = ProfileBuilder::new(&[("samples", "count"), ("cpu", "nanoseconds")]);
        b.add_folded(&["a", "b", "c"], &[1, 10]);
        b.add_folded(&["a", "b", "c"], &[2, 20]);
        b.add_folded(&["a", "b"], &[1, 10]);
        let l = b.frame("a");
        b.add_sample_with_labels(&[l], &[1, 1], &[("thread", "t1")]);
        b.add_sample_with_labels(&[l], &[1, 1], &[("thread", "t1")]);
        b.add_sample_with_labels(&[l], &[1, 1], &[("thread", "t2")]);
        let p = b.build();
        check_valid(&p).unwrap();
        assert_eq!(p.function.len(), 3);
        assert_eq!(p.location.len(), 3);
        assert_eq!(p.sample.len(), 4);
        assert_eq!(p.sample[0].value, [3, 30]);
        assert_eq!(p.sample[2].value, [2, 2]);
        // Leaf first.
        assert_eq!(
            p.string(p.function[(p.sample[0].location_id[0] - 1) as usize].name),
            "c"
        );
        let strings: std::collections::HashSet<_> = p.string_table.iter().collect();
        assert_eq!(strings.len(), p.string_table.len(), "strings are unique");
    }

    #[test]
    fn cpu_period() {
        let b = ProfileBuilder::cpu(97);
        assert_eq!(b.period(), 10_309_278);
        let p = b.build();
        assert_eq!(p.sample_types(), [("cpu", "nanoseconds")]);
        let pt = p.period_type.unwrap();
        assert_eq!(
            (p.string(pt.r#type), p.string(pt.unit)),
            ("cpu", "nanoseconds")
        );
    }

    #[test]
    fn line_locations_carry_lines_files_and_flags() {
        let mut b = ProfileBuilder::new(&[("samples", "count")]);
        let flags = MappingFlags {
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        };
        let m = b.add_mapping_with_flags(0, 0, 0, "/bin/x", "abcd", flags);
        let inner = b.function_at("inner", "x.h", 3);
        let outer = b.function_at("outer", "x.c", 10);
        assert_eq!(b.function_at("inner", "x.h", 3), inner);
        let l = b.line_location(m, 0x40, &[(inner, 5), (outer, 12)]);
        assert_eq!(b.line_location(m, 0x40, &[]), l);
        b.add_sample(&[l], &[1]);
        let p = b.build();
        check_valid(&p).unwrap();
        let loc = &p.location[0];
        assert_eq!((loc.mapping_id, loc.address), (m, 0x40));
        let lines: Vec<(&str, &str, i64, i64)> = loc
            .line
            .iter()
            .map(|l| {
                let f = &p.function[(l.function_id - 1) as usize];
                (p.string(f.name), p.string(f.filename), f.start_line, l.line)
            })
            .collect();
        assert_eq!(lines, [("inner", "x.h", 3, 5), ("outer", "x.c", 10, 12)]);
        let mp = &p.mapping[0];
        assert!(
            mp.has_functions && mp.has_filenames && mp.has_line_numbers && mp.has_inline_frames
        );
        assert_eq!(p.string(mp.build_id), "abcd");
    }

    #[test]
    fn address_locations_and_mappings() {
        let mut b = ProfileBuilder::new(&[("samples", "count")]);
        let m = b.add_mapping(0x1000, 0x2000, 0, "/bin/x", "abcd");
        let f = b.function("inner", "x.c");
        let g = b.function("outer", "x.c");
        let l1 = b.address_location(m, 0x1234, &[f, g]);
        let l2 = b.address_location(m, 0x1234, &[f]);
        assert_eq!(l1, l2);
        b.add_sample(&[l1], &[1, 99]); // extra value dropped
        let p = b.build();
        check_valid(&p).unwrap();
        assert_eq!(p.location[0].line.len(), 2);
        assert_eq!(p.sample[0].value, [1]);
    }
}
