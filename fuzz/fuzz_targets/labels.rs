//! Label validation must never panic, and a set it accepts must keep its invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_core::Labels;

fuzz_target!(|pairs: Vec<(String, String)>| {
    if let Ok(labels) = Labels::try_from_pairs(pairs.clone()) {
        let names: Vec<&str> = labels.iter().map(|l| l.name()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        if labels.validate().is_ok() {
            assert!(labels.len() <= 30);
            assert!(labels.iter().all(|l| !l.value().is_empty()));
        }
    }
    let mut l = Labels::from_iter(pairs);
    l.drop_reserved();
    let _ = l.validate().map_err(|e| (e.rule(), e.to_string()));
});
