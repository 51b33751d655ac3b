//! Kubernetes discovery never panics on any API object: the input is a `List` (as
//! `kubectl get pods,nodes,services,endpointslices -o json` prints it), each item decoded with
//! k8s-openapi's models as the watcher decodes them and turned into the targets of its role
//! (endpoint slices with the list's pods, services and nodes as related objects). Every target
//! has an address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_discovery::kubernetes::fuzzing::targets_from_json;

fuzz_target!(|data: &[u8]| {
    let Ok(targets) = targets_from_json(data) else {
        return;
    };
    for t in &targets {
        assert!(t.labels().get("__address__").is_some(), "{:?}", t.labels());
    }
});
