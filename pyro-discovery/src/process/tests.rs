//! Process discovery against a fake procfs tree (the layout of `proc(5)`), so every Alloy rule
//! can be exercised without depending on what runs on the machine. Real processes are covered
//! by `tests/process.rs`.

use std::fs;
use std::os::unix::fs::symlink;
use std::sync::Mutex;

use futures_util::StreamExt;

use super::*;

const CID: &str = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

struct FakeProc {
    dir: tempfile::TempDir,
}

impl FakeProc {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A user process with every file.
    fn process(&self, pid: u32, exe: &str, args: &[&str], cgroup: &str) {
        let d = self.path().join(pid.to_string());
        fs::create_dir(&d).unwrap();
        symlink(exe, d.join("exe")).unwrap();
        symlink("/srv/app", d.join("cwd")).unwrap();
        let mut cmdline = Vec::new();
        for a in args {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        fs::write(d.join("cmdline"), cmdline).unwrap();
        fs::write(d.join("status"), status("app", "0\t1000\t1000\t1000")).unwrap();
        fs::write(d.join("cgroup"), cgroup).unwrap();
    }

    /// A kernel thread: no `exe` link target (the kernel answers ENOENT), empty cmdline.
    fn kernel_thread(&self, pid: u32) {
        let d = self.path().join(pid.to_string());
        fs::create_dir(&d).unwrap();
        symlink("/", d.join("cwd")).unwrap();
        fs::write(d.join("cmdline"), "").unwrap();
        fs::write(d.join("status"), status("kworker", "0\t0\t0\t0")).unwrap();
        fs::write(d.join("cgroup"), "0::/\n").unwrap();
    }
}

fn pids(targets: &[Target]) -> Vec<u32> {
    targets.iter().filter_map(Target::pid).collect()
}

#[test]
fn labels_of_a_process() {
    let proc = FakeProc::new();
    proc.process(
        42,
        "/usr/bin/app",
        &["app", "--flag", "", "x y"],
        &format!("1:cpu:/\n0::/system.slice/docker-{CID}.scope\n"),
    );
    let all = DiscoverConfig {
        cgroup_path: true,
        uid: true,
        username: true,
        ..DiscoverConfig::default()
    };
    let targets = scan_processes(proc.path(), &all).unwrap();
    assert_eq!(targets.len(), 1);
    let l = targets[0].labels();
    assert_eq!(l.get("__process_pid__"), Some("42"));
    assert_eq!(l.get(LABEL_EXE), Some("/usr/bin/app"));
    assert_eq!(l.get(LABEL_CWD), Some("/srv/app"));
    // Empty arguments are dropped, the rest joined by spaces.
    assert_eq!(l.get(LABEL_COMMANDLINE), Some("app --flag x y"));
    // The real uid (first field), and its name from /etc/passwd (uid 0 is root everywhere).
    assert_eq!(l.get(LABEL_UID), Some("0"));
    assert_eq!(l.get(LABEL_USERNAME), Some("root"));
    assert_eq!(l.get("__container_id__"), Some(CID));
    assert_eq!(
        l.get(LABEL_CGROUP_PATH),
        Some(format!("1:cpu:/|0::/system.slice/docker-{CID}.scope").as_str())
    );
    assert_eq!(targets[0].container_id(), Some(CID));

    // Alloy's code defaults: no uid, username or cgroup path.
    let targets = scan_processes(proc.path(), &DiscoverConfig::default()).unwrap();
    let l = targets[0].labels();
    assert_eq!(l.get(LABEL_UID), None);
    assert_eq!(l.get(LABEL_USERNAME), None);
    assert_eq!(l.get(LABEL_CGROUP_PATH), None);
    assert_eq!(l.len(), 5, "{l}");
}

#[test]
fn kernel_threads_and_vanished_processes() {
    let proc = FakeProc::new();
    proc.process(1, "/sbin/init", &["/sbin/init"], "0::/init.scope\n");
    proc.kernel_thread(2);
    // Vanished mid-read: the directory is there, its files are gone.
    fs::create_dir(proc.path().join("3")).unwrap();
    // Not a process.
    fs::create_dir(proc.path().join("sys")).unwrap();
    fs::write(proc.path().join("uptime"), "1 1").unwrap();

    let targets = scan_processes(proc.path(), &DiscoverConfig::default()).unwrap();
    assert_eq!(
        pids(&targets),
        [1],
        "kernel threads have no exe; 3 vanished"
    );

    // Without `exe`, kernel threads are listed (their empty command line is left out).
    let no_exe = DiscoverConfig {
        exe: false,
        ..DiscoverConfig::default()
    };
    let targets = scan_processes(proc.path(), &no_exe).unwrap();
    assert_eq!(pids(&targets), [1, 2]);
    assert_eq!(targets[1].labels().get(LABEL_COMMANDLINE), None);
    assert_eq!(targets[1].labels().get(LABEL_CWD), Some("/"));

    // Every field off: just the pids, including the vanished one (nothing is read).
    let nothing = DiscoverConfig {
        exe: false,
        cwd: false,
        commandline: false,
        container_id: false,
        ..DiscoverConfig::default()
    };
    assert_eq!(
        pids(&scan_processes(proc.path(), &nothing).unwrap()),
        [1, 2, 3]
    );
}

#[test]
fn unreadable_procfs_is_an_error() {
    let e = scan_processes(Path::new("/nonexistent/proc"), &DiscoverConfig::default()).unwrap_err();
    assert!(matches!(e, ProcessError::ListProcesses { .. }));
    assert!(e.to_string().contains("/nonexistent/proc"), "{e}");
}

fn t(pairs: &[(&str, &str)]) -> Target {
    Target::new(Labels::from_iter(pairs.iter().copied()))
}

/// The cases of Alloy's `join_test.go`, rebuilt: merge by container id from each of the three
/// labels, join labels win, every join target is also emitted.
#[test]
fn join_by_container_id() {
    let other = "f".repeat(64);
    let processes = vec![
        t(&[
            ("__process_pid__", "1"),
            ("__container_id__", CID),
            ("a", "process"),
        ]),
        t(&[("__process_pid__", "2"), ("__container_id__", &other)]),
        t(&[("__process_pid__", "3")]),
    ];
    let k8s_id = format!("containerd://{CID}");
    let joins = vec![
        t(&[
            ("__meta_kubernetes_pod_container_id", &k8s_id),
            ("a", "pod"),
            ("pod", "p1"),
        ]),
        t(&[("__address__", "no-container")]),
    ];
    let out = join(processes, &joins);
    assert_eq!(
        out,
        vec![
            t(&[("__address__", "no-container")]),
            t(&[
                ("__process_pid__", "1"),
                ("__container_id__", CID),
                ("__meta_kubernetes_pod_container_id", &k8s_id),
                ("a", "pod"),
                ("pod", "p1"),
            ]),
            t(&[("__process_pid__", "2"), ("__container_id__", &other)]),
            t(&[("__process_pid__", "3")]),
            t(&[
                ("__meta_kubernetes_pod_container_id", &k8s_id),
                ("a", "pod"),
                ("pod", "p1"),
            ]),
        ]
    );

    // Docker ids, and the last of two join targets with the same id wins.
    let processes = vec![t(&[("__process_pid__", "1"), ("__container_id__", CID)])];
    let joins = vec![
        t(&[("__meta_docker_container_id", CID), ("name", "first")]),
        t(&[("__meta_docker_container_id", CID), ("name", "second")]),
    ];
    let out = join(processes, &joins);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].labels().get("name"), Some("second"));
    assert_eq!(out[0].pid(), Some(1));
    assert_eq!(out[1].labels().get("name"), Some("second"));

    // Nothing to join: the processes as they are.
    let processes = vec![t(&[("__process_pid__", "9")])];
    assert_eq!(join(processes.clone(), &[]), processes);
}

async fn next(s: &mut TargetStream) -> Vec<Target> {
    // A guard against hanging, not a timing assertion: refreshes come every 100 ms.
    tokio::time::timeout(Duration::from_secs(60), s.next())
        .await
        .expect("an update")
        .expect("the stream goes on")
}

/// A join source fed by the test.
#[derive(Debug)]
struct Feed(Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Vec<Target>>>>);

impl Discoverer for Feed {
    fn subscribe(&self) -> TargetStream {
        let rx = self.0.lock().unwrap().take().expect("subscribed once");
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
            .boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_rescans_and_rejoins() {
    let proc = FakeProc::new();
    proc.process(10, "/bin/a", &["a"], &format!("0::/docker/{CID}\n"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(vec![t(&[("__container_id__", CID), ("app", "one")])])
        .unwrap();
    let config = ProcessDiscoveryConfig {
        refresh_interval: Duration::ZERO, // raised to MIN_REFRESH_INTERVAL
        proc_path: proc.path().to_owned(),
        ..ProcessDiscoveryConfig::default()
    };
    let discovery = ProcessDiscoverer::new(config).with_join(Arc::new(Feed(Mutex::new(Some(rx)))));
    let mut stream = discovery.subscribe();
    // First item: the scan, joined with the join set that was ready.
    let first = next(&mut stream).await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].pid(), Some(10));
    assert_eq!(first[0].labels().get("app"), Some("one"));

    // A new process shows up at a later refresh.
    proc.process(11, "/bin/b", &["b"], "0::/\n");
    let second = next(&mut stream).await;
    assert_eq!(pids(&second), [10, 11]);

    // A join update re-joins the last scan.
    tx.send(vec![t(&[("__container_id__", CID), ("app", "two")])])
        .unwrap();
    let third = next(&mut stream).await;
    assert_eq!(pids(&third), [10, 11]);
    assert_eq!(third[0].labels().get("app"), Some("two"));

    // The join source ending does not end discovery.
    drop(tx);
    fs::remove_dir_all(proc.path().join("10")).unwrap();
    let fourth = next(&mut stream).await;
    assert_eq!(pids(&fourth), [11]);
}

/// A real `/proc/PID/status` (this process's, as the kernel writes it) with another name and
/// `Uid:` line.
fn status(name: &str, uids: &str) -> String {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("Name:") {
                format!("Name:\t{name}")
            } else if l.starts_with("Uid:") {
                format!("Uid:\t{uids}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
