//! Prometheus's own Kubernetes discovery cases (`discovery/kubernetes/pod_test.go`,
//! `node_test.go`, `service_test.go` at prometheus/prometheus d15adb9), the objects written as
//! the API serves them and the expected label sets as the tests give them (group labels merged
//! into each target, as Prometheus exports them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use serde_json::json;

use super::labels::{Related, endpointslice_targets, node_targets, pod_targets, service_targets};
use super::{KubernetesConfig, KubernetesDiscoverer};

type Set = BTreeMap<String, String>;

fn sets(targets: &[pyro_core::Target]) -> Vec<Set> {
    let mut v: Vec<Set> = targets
        .iter()
        .map(|t| {
            t.labels()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect()
        })
        .collect();
    v.sort();
    v
}

fn expect(group: &[(&str, &str)], targets: &[&[(&str, &str)]]) -> Vec<Set> {
    let mut v: Vec<Set> = targets
        .iter()
        .map(|t| {
            group
                .iter()
                .chain(t.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        })
        .collect();
    v.sort();
    v
}

/// `makeMultiPortPods()`.
fn multi_port_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "testpod", "namespace": "default", "uid": "abc123",
            "labels": {"test/label": "testvalue"},
            "annotations": {"test/annotation": "testannotationvalue"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "testcontrollerkind",
                                 "name": "testcontrollername", "uid": "x", "controller": true}]
        },
        "spec": {
            "nodeName": "testnode",
            "containers": [
                {"name": "testcontainer0", "image": "testcontainer0:latest", "ports": [
                    {"name": "testport0", "protocol": "TCP", "containerPort": 9000},
                    {"name": "testport1", "protocol": "UDP", "containerPort": 9001}]},
                {"name": "testcontainer1", "image": "testcontainer1:latest"}
            ]
        },
        "status": {
            "podIP": "1.2.3.4", "hostIP": "2.3.4.5", "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "testcontainer0", "containerID": "docker://a1b2c3d4e5f6", "image": "", "imageID": "", "ready": true, "restartCount": 0},
                {"name": "testcontainer1", "containerID": "containerd://6f5e4d3c2b1a", "image": "", "imageID": "", "ready": true, "restartCount": 0}
            ]
        }
    }))
    .unwrap()
}

/// `makePods(namespace)` and `makeInitContainerPods()`.
fn pod(ns: &str, init: bool) -> Pod {
    let mut v = json!({
        "metadata": {"name": "testpod", "namespace": ns, "uid": "abc123"},
        "spec": {
            "nodeName": "testnode",
            "containers": [{"name": "testcontainer", "image": "testcontainer:latest",
                "ports": [{"name": "testport", "protocol": "TCP", "containerPort": 9000}]}]
        },
        "status": {
            "podIP": "1.2.3.4", "hostIP": "2.3.4.5", "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "testcontainer", "containerID": "docker://a1b2c3d4e5f6",
                "image": "", "imageID": "", "ready": true, "restartCount": 0}]
        }
    });
    if init {
        v["spec"]["initContainers"] =
            json!([{"name": "initcontainer", "image": "initcontainer:latest"}]);
        v["status"]["phase"] = json!("Pending");
        v["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        v["status"]["initContainerStatuses"] = json!([{"name": "initcontainer",
            "containerID": "containerd://6f5e4d3c2b1a", "image": "", "imageID": "", "ready": false, "restartCount": 0}]);
    }
    serde_json::from_value(v).unwrap()
}

const POD_GROUP: &[(&str, &str)] = &[
    ("__meta_kubernetes_pod_name", "testpod"),
    ("__meta_kubernetes_namespace", "default"),
    ("__meta_kubernetes_pod_node_name", "testnode"),
    ("__meta_kubernetes_pod_ip", "1.2.3.4"),
    ("__meta_kubernetes_pod_host_ip", "2.3.4.5"),
    ("__meta_kubernetes_pod_ready", "true"),
    ("__meta_kubernetes_pod_phase", "Running"),
    ("__meta_kubernetes_pod_uid", "abc123"),
];

const POD_TARGET: &[(&str, &str)] = &[
    ("__address__", "1.2.3.4:9000"),
    ("__meta_kubernetes_pod_container_name", "testcontainer"),
    (
        "__meta_kubernetes_pod_container_image",
        "testcontainer:latest",
    ),
    ("__meta_kubernetes_pod_container_port_name", "testport"),
    ("__meta_kubernetes_pod_container_port_number", "9000"),
    ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
    ("__meta_kubernetes_pod_container_init", "false"),
    (
        "__meta_kubernetes_pod_container_id",
        "docker://a1b2c3d4e5f6",
    ),
];

// TestPodDiscoveryBeforeRun.
#[test]
fn pod_multi_port() {
    let mut group = POD_GROUP.to_vec();
    group.extend([
        ("__meta_kubernetes_pod_label_test_label", "testvalue"),
        ("__meta_kubernetes_pod_labelpresent_test_label", "true"),
        (
            "__meta_kubernetes_pod_annotation_test_annotation",
            "testannotationvalue",
        ),
        (
            "__meta_kubernetes_pod_annotationpresent_test_annotation",
            "true",
        ),
        (
            "__meta_kubernetes_pod_controller_kind",
            "testcontrollerkind",
        ),
        (
            "__meta_kubernetes_pod_controller_name",
            "testcontrollername",
        ),
    ]);
    let want = expect(
        &group,
        &[
            &[
                ("__address__", "1.2.3.4:9000"),
                ("__meta_kubernetes_pod_container_name", "testcontainer0"),
                (
                    "__meta_kubernetes_pod_container_image",
                    "testcontainer0:latest",
                ),
                ("__meta_kubernetes_pod_container_port_name", "testport0"),
                ("__meta_kubernetes_pod_container_port_number", "9000"),
                ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
                ("__meta_kubernetes_pod_container_init", "false"),
                (
                    "__meta_kubernetes_pod_container_id",
                    "docker://a1b2c3d4e5f6",
                ),
            ],
            &[
                ("__address__", "1.2.3.4:9001"),
                ("__meta_kubernetes_pod_container_name", "testcontainer0"),
                (
                    "__meta_kubernetes_pod_container_image",
                    "testcontainer0:latest",
                ),
                ("__meta_kubernetes_pod_container_port_name", "testport1"),
                ("__meta_kubernetes_pod_container_port_number", "9001"),
                ("__meta_kubernetes_pod_container_port_protocol", "UDP"),
                ("__meta_kubernetes_pod_container_init", "false"),
                (
                    "__meta_kubernetes_pod_container_id",
                    "docker://a1b2c3d4e5f6",
                ),
            ],
            &[
                ("__address__", "1.2.3.4"),
                ("__meta_kubernetes_pod_container_name", "testcontainer1"),
                (
                    "__meta_kubernetes_pod_container_image",
                    "testcontainer1:latest",
                ),
                ("__meta_kubernetes_pod_container_init", "false"),
                (
                    "__meta_kubernetes_pod_container_id",
                    "containerd://6f5e4d3c2b1a",
                ),
            ],
        ],
    );
    assert_eq!(sets(&pod_targets(&multi_port_pod(), None)), want);
}

// TestPodDiscoveryInitContainer.
#[test]
fn pod_init_container() {
    let mut group = POD_GROUP.to_vec();
    group.retain(|(k, _)| !k.ends_with("_phase") && !k.ends_with("_ready"));
    group.extend([
        ("__meta_kubernetes_pod_phase", "Pending"),
        ("__meta_kubernetes_pod_ready", "false"),
    ]);
    let want = expect(
        &group,
        &[
            POD_TARGET,
            &[
                ("__address__", "1.2.3.4"),
                ("__meta_kubernetes_pod_container_name", "initcontainer"),
                (
                    "__meta_kubernetes_pod_container_image",
                    "initcontainer:latest",
                ),
                ("__meta_kubernetes_pod_container_init", "true"),
                (
                    "__meta_kubernetes_pod_container_id",
                    "containerd://6f5e4d3c2b1a",
                ),
            ],
        ],
    );
    assert_eq!(sets(&pod_targets(&pod("default", true), None)), want);
}

// TestPodDiscoveryUpdateEmptyPodIP: no pod IP, no targets.
#[test]
fn pod_without_ip() {
    let mut p = pod("default", false);
    p.status.as_mut().unwrap().pod_ip = None;
    assert!(pod_targets(&p, None).is_empty());
}

// TestPodDiscoveryWithNodeMetadata (expectedPodTargetGroupsWithNodeMeta).
#[test]
fn pod_with_node_metadata() {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "testnode", "labels": {"l1": "v1"}}
    }))
    .unwrap();
    let mut group = POD_GROUP.to_vec();
    group.extend([
        ("__meta_kubernetes_node_name", "testnode"),
        ("__meta_kubernetes_node_label_l1", "v1"),
        ("__meta_kubernetes_node_labelpresent_l1", "true"),
    ]);
    assert_eq!(
        sets(&pod_targets(&pod("default", false), Some(&node))),
        expect(&group, &[POD_TARGET])
    );
}

// TestNodeDiscoveryBeforeStart.
#[test]
fn node() {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "test", "labels": {"test-label": "testvalue"},
                     "annotations": {"test-annotation": "testannotationvalue"}},
        "spec": {"providerID": "aws:///nl-north-7b/i-03149834983492827"},
        "status": {"addresses": [{"type": "InternalIP", "address": "1.2.3.4"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}
    }))
    .unwrap();
    let want = expect(
        &[
            ("__meta_kubernetes_node_name", "test"),
            (
                "__meta_kubernetes_node_provider_id",
                "aws:///nl-north-7b/i-03149834983492827",
            ),
            ("__meta_kubernetes_node_label_test_label", "testvalue"),
            ("__meta_kubernetes_node_labelpresent_test_label", "true"),
            (
                "__meta_kubernetes_node_annotation_test_annotation",
                "testannotationvalue",
            ),
            (
                "__meta_kubernetes_node_annotationpresent_test_annotation",
                "true",
            ),
        ],
        &[&[
            ("__address__", "1.2.3.4:10250"),
            ("instance", "test"),
            ("__meta_kubernetes_node_address_InternalIP", "1.2.3.4"),
        ]],
    );
    assert_eq!(sets(&node_targets(&node)), want);
}

// TestServiceDiscoveryAdd.
#[test]
fn services() {
    let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).unwrap() };
    let port = json!([{"name": "testport", "protocol": "TCP", "port": 31900}]);
    let cases = [
        (
            svc(
                json!({"metadata": {"name": "testservice", "namespace": "default"},
                "spec": {"ports": [{"name": "testport", "protocol": "TCP", "port": 30900}],
                         "type": "ClusterIP", "clusterIP": "10.0.0.1"}}),
            ),
            vec![
                ("__address__", "testservice.default.svc:30900"),
                ("__meta_kubernetes_service_type", "ClusterIP"),
                ("__meta_kubernetes_service_cluster_ip", "10.0.0.1"),
                ("__meta_kubernetes_service_port_number", "30900"),
            ],
        ),
        (
            svc(
                json!({"metadata": {"name": "testservice-external", "namespace": "default"},
                "spec": {"ports": port, "type": "ExternalName", "externalName": "FooExternalName"}}),
            ),
            vec![
                ("__address__", "testservice-external.default.svc:31900"),
                ("__meta_kubernetes_service_type", "ExternalName"),
                ("__meta_kubernetes_service_external_name", "FooExternalName"),
                ("__meta_kubernetes_service_port_number", "31900"),
            ],
        ),
        (
            svc(
                json!({"metadata": {"name": "testservice-loadbalancer", "namespace": "default"},
                "spec": {"ports": port, "type": "LoadBalancer", "clusterIP": "10.0.0.1",
                         "loadBalancerIP": "127.0.0.1"}}),
            ),
            vec![
                ("__address__", "testservice-loadbalancer.default.svc:31900"),
                ("__meta_kubernetes_service_type", "LoadBalancer"),
                ("__meta_kubernetes_service_cluster_ip", "10.0.0.1"),
                ("__meta_kubernetes_service_loadbalancer_ip", "127.0.0.1"),
                ("__meta_kubernetes_service_port_number", "31900"),
            ],
        ),
        (
            svc(
                json!({"metadata": {"name": "testservice-lb-ingress", "namespace": "default"},
                "spec": {"ports": port, "type": "LoadBalancer", "clusterIP": "10.0.0.1"},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.15"}, {"ip": "2001:db8::1"}]}}}),
            ),
            vec![
                ("__address__", "testservice-lb-ingress.default.svc:31900"),
                ("__meta_kubernetes_service_type", "LoadBalancer"),
                ("__meta_kubernetes_service_cluster_ip", "10.0.0.1"),
                (
                    "__meta_kubernetes_service_loadbalancer_ip",
                    "192.168.1.15,2001:db8::1",
                ),
                ("__meta_kubernetes_service_port_number", "31900"),
            ],
        ),
    ];
    for (s, mut target) in cases {
        target.extend([
            ("__meta_kubernetes_service_port_protocol", "TCP"),
            ("__meta_kubernetes_service_port_name", "testport"),
        ]);
        let name = s.metadata.name.clone().unwrap();
        let group = [
            ("__meta_kubernetes_service_name", name.as_str()),
            ("__meta_kubernetes_namespace", "default"),
        ];
        assert_eq!(
            sets(&service_targets(&s)),
            expect(&group, &[&target]),
            "{name}"
        );
    }
}

#[test]
fn config_errors_name_the_field() {
    let bad = |v: serde_json::Value| {
        KubernetesDiscoverer::new(serde_json::from_value::<KubernetesConfig>(v).unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(bad(json!({})).contains("`role`"));
    assert!(
        bad(json!({"role": "pod", "api_server": "http://a", "kubeconfig_file": "/k"}))
            .contains("`kubeconfig_file`")
    );
    assert!(bad(json!({"role": "pod", "bearer_token": "t"})).contains("`api_server`"));
    assert!(
        bad(json!({"role": "node", "attach_metadata": {"node": true}}))
            .contains("`attach_metadata.node`")
    );
    assert!(
        bad(json!({"role": "pod", "selectors": [{"role": "service", "label": "a=b"}]}))
            .contains("`selectors.role`")
    );
    assert!(bad(json!({"role": "node", "namespaces": {"names": ["a"]}})).contains("`namespaces`"));
    let e = serde_json::from_value::<KubernetesConfig>(json!({"role": "pod", "oauth2": {}}))
        .unwrap_err();
    assert!(e.to_string().contains("oauth2"), "{e}");
    assert!(KubernetesDiscoverer::new(serde_json::from_value(json!({
        "role": "pod", "api_server": "https://10.0.0.1:6443", "bearer_token": "t",
        "namespaces": {"names": ["shop"]},
        "selectors": [{"role": "pod", "field": "spec.nodeName=n1"}, {"role": "node", "label": "x"}],
        "attach_metadata": {"node": true}
    })).unwrap()).is_ok());
}

/// `makeEndpointSliceV1("default")`.
fn endpoint_slice() -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let cond = |r: bool, s: bool, t: bool| json!({"ready": r, "serving": s, "terminating": t});
    serde_json::from_value(json!({
        "metadata": {"name": "testendpoints", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "testendpoints"},
                     "annotations": {"test.annotation": "test"}},
        "addressType": "IPv4",
        "ports": [{"name": "testport", "port": 9000, "protocol": "TCP", "appProtocol": "http"}],
        "endpoints": [
            {"addresses": ["1.2.3.4"], "conditions": cond(true, true, false), "hostname": "testendpoint1",
             "targetRef": {}, "nodeName": "foobar", "deprecatedTopology": {"topology": "value"}, "zone": "us-east-1a"},
            {"addresses": ["2.3.4.5"], "conditions": cond(true, true, false), "zone": "us-east-1b"},
            {"addresses": ["3.4.5.6"], "conditions": cond(false, true, true), "zone": "us-east-1c"},
            {"addresses": ["4.5.6.7"], "conditions": cond(true, true, false),
             "targetRef": {"kind": "Node", "name": "barbaz"}, "zone": "us-east-1a"}
        ]
    }))
    .unwrap()
}

// TestEndpointSliceDiscoveryBeforeRun.
#[test]
fn endpointslice() {
    let common: &[(&str, &str)] = &[
        ("__meta_kubernetes_endpointslice_port", "9000"),
        ("__meta_kubernetes_endpointslice_port_app_protocol", "http"),
        ("__meta_kubernetes_endpointslice_port_name", "testport"),
        ("__meta_kubernetes_endpointslice_port_protocol", "TCP"),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_serving",
            "true",
        ),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = common.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let t1 = with(&[
        ("__address__", "1.2.3.4:9000"),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_ready",
            "true",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_terminating",
            "false",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_hostname",
            "testendpoint1",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_node_name",
            "foobar",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_topology_present_topology",
            "true",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_topology_topology",
            "value",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_zone",
            "us-east-1a",
        ),
    ]);
    let t2 = with(&[
        ("__address__", "2.3.4.5:9000"),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_ready",
            "true",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_terminating",
            "false",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_zone",
            "us-east-1b",
        ),
    ]);
    let t3 = with(&[
        ("__address__", "3.4.5.6:9000"),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_ready",
            "false",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_terminating",
            "true",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_zone",
            "us-east-1c",
        ),
    ]);
    let t4 = with(&[
        ("__address__", "4.5.6.7:9000"),
        (
            "__meta_kubernetes_endpointslice_address_target_kind",
            "Node",
        ),
        (
            "__meta_kubernetes_endpointslice_address_target_name",
            "barbaz",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_ready",
            "true",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_conditions_terminating",
            "false",
        ),
        (
            "__meta_kubernetes_endpointslice_endpoint_zone",
            "us-east-1a",
        ),
    ]);
    let group = [
        ("__meta_kubernetes_endpointslice_address_type", "IPv4"),
        ("__meta_kubernetes_namespace", "default"),
        ("__meta_kubernetes_endpointslice_name", "testendpoints"),
        (
            "__meta_kubernetes_endpointslice_label_kubernetes_io_service_name",
            "testendpoints",
        ),
        (
            "__meta_kubernetes_endpointslice_labelpresent_kubernetes_io_service_name",
            "true",
        ),
        (
            "__meta_kubernetes_endpointslice_annotation_test_annotation",
            "test",
        ),
        (
            "__meta_kubernetes_endpointslice_annotationpresent_test_annotation",
            "true",
        ),
    ];
    let want = expect(&group, &[&t1, &t2, &t3, &t4]);
    assert_eq!(
        sets(&endpointslice_targets(
            &endpoint_slice(),
            &Related::default()
        )),
        want
    );
}

// TestEndpointSliceDiscoveryWithService-like: the service's labels join, and an endpoint
// referring to a known pod gets the pod's and its container's labels, plus a target for the
// pod's other container port.
#[test]
fn endpointslice_with_service_and_pod() {
    let mut eps = endpoint_slice();
    eps.endpoints.truncate(1);
    eps.endpoints[0].target_ref = Some(
        serde_json::from_value(json!({
        "kind": "Pod", "name": "testpod", "namespace": "default"}))
        .unwrap(),
    );
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "testendpoints",
        "namespace": "default", "labels": {"app/name": "test"}}}))
    .unwrap();
    let mut pod = multi_port_pod();
    pod.metadata.namespace = Some("default".into());
    let related = Related {
        pods: [("default/testpod".to_owned(), &pod)].into_iter().collect(),
        services: [("default/testendpoints".to_owned(), &svc)]
            .into_iter()
            .collect(),
        nodes: None,
    };
    let got = sets(&endpointslice_targets(&eps, &related));
    assert_eq!(got.len(), 2, "{got:#?}");
    for t in &got {
        assert_eq!(t["__meta_kubernetes_service_name"], "testendpoints");
        assert_eq!(t["__meta_kubernetes_service_label_app_name"], "test");
        assert_eq!(t["__meta_kubernetes_pod_name"], "testpod");
        assert_eq!(
            t["__meta_kubernetes_pod_controller_kind"],
            "testcontrollerkind"
        );
    }
    let by_addr: BTreeMap<&str, &Set> =
        got.iter().map(|t| (t["__address__"].as_str(), t)).collect();
    // The slice's port 9000 matches testcontainer0's testport0.
    assert_eq!(
        by_addr["1.2.3.4:9000"]["__meta_kubernetes_pod_container_port_name"],
        "testport0"
    );
    assert_eq!(
        by_addr["1.2.3.4:9000"]["__meta_kubernetes_endpointslice_port"],
        "9000"
    );
    // The pod's other port, 9001/UDP, has a target of its own without endpoint labels.
    let other = by_addr["1.2.3.4:9001"];
    assert_eq!(
        other["__meta_kubernetes_pod_container_port_protocol"],
        "UDP"
    );
    assert!(!other.contains_key("__meta_kubernetes_endpointslice_port"));
}

/// The fuzzing entry point decodes a `List` and makes each role's targets as the discoverer
/// does: the multi-port pod gives the targets `pod_targets` gives it; other kinds are passed
/// over; a pod that does not decode is an error.
#[test]
fn fuzzing_entry_point_decodes_a_list() {
    let mut pod = serde_json::to_value(multi_port_pod()).unwrap();
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x"}});
    let list = json!({"kind": "List", "apiVersion": "v1", "items": [pod, cm]});
    let got = super::fuzzing::targets_from_json(list.to_string().as_bytes()).unwrap();
    assert_eq!(sets(&got), sets(&pod_targets(&multi_port_pod(), None)));
    assert_eq!(got.len(), 3);
    let bad = json!({"items": [{"kind": "Pod", "spec": {"containers": 1}}]});
    assert!(super::fuzzing::targets_from_json(bad.to_string().as_bytes()).is_err());
}
