//! scripts/lab end to end: an emulated cluster of network namespaces, veth NICs and Linux
//! bridges (one switch, or a 2:1 leaf-spine), a `--mpi` job across it, the NICs' own counters
//! in the trace, and nothing left behind. Needs root (CI runs as root) and Open MPI; where
//! namespaces cannot be made the test says why and does nothing, and under CI (CI=true) fails.
#![cfg(feature = "mpi")]

mod common;
use std::process::Command;

/// Whether a network namespace can be made here; if not, `test` says why (and fails under CI)
/// via [`common::skip`].
fn can_make_namespaces(test: &str) -> bool {
    // A name of its own for each probe: the tests run at once, and with one shared name a
    // test whose probe met another's ("File exists") skipped. Not "gtlab-", which the tests
    // look for as a lab's leftovers.
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("gpu-train-test-probe-{}-{n}", std::process::id());
    let why = match Command::new("ip").args(["netns", "add", &probe]).output() {
        Err(e) => format!("`ip` cannot be run ({e}): install iproute2"),
        Ok(out) if !out.status.success() => format!(
            "network namespaces cannot be made here (needs root or CAP_NET_ADMIN): ip netns add: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => {
            let _ = Command::new("ip").args(["netns", "delete", &probe]).status();
            return true;
        }
    };
    common::skip(test, &why);
    false
}

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("gtlab-"))
        .map(String::from)
        .collect()
}

/// Runs the lab and checks what the wire counted against what the algorithm moved; returns
/// the NIC table (nics.tsv) without its header, a row of fields per host.
/// Runs a lab of `hosts` hosts on `topology` with a short CPU job and checks what every lab
/// must leave: the pictures, every rank's NIC track, NIC counters that cover the payload, no
/// namespace. Returns its folder, its nics.tsv rows, a rank's all-reduce payload and what it
/// printed.
fn lab(hosts: usize, topology: &[&str]) -> (tempfile::TempDir, Vec<Vec<u64>>, u64, String) {
    let _one_at_a_time = LABS.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let n = hosts.to_string();
    let run = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lab"))
        .args(["--hosts", &n, "--out", dir])
        .args(topology)
        .args([
            "--",
            "--cpu",
            "--threads",
            "1",
            "--limit",
            "1280",
            "--epochs",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "scripts/lab {topology:?}:\n{text}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        lab_namespaces().is_empty(),
        "left behind: {:?}",
        lab_namespaces()
    );
    // `gpu-train network` read the NICs' counters: rank 0's wire per step, and a measured
    // utilisation picture beside the model for every host's link.
    assert!(text.contains("on rank 0's wire"), "{text}");
    assert!(
        out.path().join("topology.png").is_file(),
        "no topology picture:\n{text}"
    );
    for rank in 0..hosts {
        let pic = out.path().join(format!("link-measured-rank{rank}.png"));
        assert!(pic.is_file(), "{} missing:\n{text}", pic.display());
    }
    // Every host's NIC has its counter track in the trace.
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("trace.json")).unwrap())
            .unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    for rank in 0..hosts {
        assert!(
            events.iter().any(|e| e["ph"] == "C" && e["pid"] == rank),
            "no NIC counter track for rank {rank}"
        );
    }
    // Bytes on the wire: at least what MPI was handed to send, plus headers.
    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let epoch: serde_json::Value = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["kind"] == "epoch")
        .expect("an epoch record");
    let payload = epoch["allreduce_sent_bytes"].as_u64().unwrap();
    // The metrics hold what rank 0's NIC counted beside the payload: at least as much.
    let nic_tx = epoch["nic_tx_bytes"]
        .as_u64()
        .expect("nic_tx_bytes in the epoch record");
    assert!(
        nic_tx >= payload,
        "NIC sent {nic_tx} bytes for {payload} of payload"
    );
    let nics = std::fs::read_to_string(out.path().join("nics.tsv")).unwrap();
    let mut rows = Vec::new();
    for line in nics.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        rows.push(f[1..].iter().map(|v| v.parse().unwrap()).collect());
        let (tx, packets): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        // Each packet carries at least 66 bytes of Ethernet, IP and TCP headers.
        assert!(
            tx >= payload + 66 * packets / 2,
            "{}: {tx} bytes in {packets} packets on the wire for {payload} bytes of payload",
            f[0]
        );
    }
    (out, rows, payload, text.into_owned())
}

/// One lab at a time on a machine (a second is refused): the tests here take turns.
static LABS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A links.tsv's totals: link name → (tx bytes, rx bytes).
fn link_totals(dir: &std::path::Path) -> std::collections::BTreeMap<String, (u64, u64)> {
    gpu_train::network::links::read(&dir.join("links.tsv"))
        .unwrap()
        .into_iter()
        .map(|t| (t.name.clone(), t.totals()))
        .collect()
}

#[test]
fn a_routed_leaf_spine_with_two_spines_trains_and_its_links_add_up() {
    if !can_make_namespaces("a_routed_leaf_spine_with_two_spines_trains_and_its_links_add_up") {
        return;
    }
    let (out, _, payload, text) = lab(
        4,
        &[
            "--leaves",
            "2",
            "--spines",
            "2",
            "--host-rate",
            "1gbit",
            "--uplink-rate",
            "1gbit",
        ],
    );
    let links = link_totals(out.path());
    let names: Vec<&String> = links.keys().collect();
    assert_eq!(
        names,
        ["h1", "h2", "h3", "h4", "l1-s1", "l1-s2", "l2-s1", "l2-s2"],
        "every host NIC and every leaf-spine link is counted"
    );
    let sum = |f: &dyn Fn(&str) -> bool, dir: usize| -> u64 {
        links
            .iter()
            .filter(|(n, _)| f(n))
            .map(|(_, t)| if dir == 0 { t.0 } else { t.1 })
            .sum()
    };
    let (uplinks, hosts) = (|n: &str| n.starts_with('l'), |n: &str| n.starts_with('h'));
    // The spines only pass traffic on: what the leaves sent up, they sent down (within a few
    // frames still in flight as the sampler stopped).
    let (up, down) = (sum(&uplinks, 0), sum(&uplinks, 1));
    assert!(up.abs_diff(down) <= 16 * 1514, "up {up}, down {down}");
    // Every byte that went up left a host first; what the hosts sent, they received.
    let (sent, received) = (sum(&hosts, 0), sum(&hosts, 1));
    assert!(up <= sent, "uplinks carried {up} bytes, hosts sent {sent}");
    assert!(
        sent.abs_diff(received) <= sent / 100,
        "sent {sent}, received {received}"
    );
    // The ring crosses between the leaves twice (h2 → h3, h4 → h1): each leaf sent at least
    // one rank's payload up.
    for l in ["l1", "l2"] {
        let leaf_up = sum(&|n: &str| n.starts_with(l), 0);
        assert!(
            leaf_up >= payload,
            "{l} sent {leaf_up} bytes up, a rank's payload is {payload}"
        );
    }
    // The connections between the leaves, as each host's kernel listed them.
    let flows = std::fs::read_to_string(out.path().join("flows.tsv")).unwrap();
    assert!(flows.lines().count() > 1, "{flows}");
    // The calibration's α and γ, read back by `network`, and the ring flows on each uplink
    // direction from the counters: 1 or 2 (two when ECMP hashed both onto one spine).
    let alpha = text
        .lines()
        .find(|l| l.contains("α = ") && l.contains("γ = "))
        .unwrap_or_else(|| panic!("no calibrated model:\n{text}"));
    let us: f64 = alpha
        .split("α = ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(us > 0.0 && us < 10_000.0, "{alpha}");
    assert!(text.contains("over these steps: predicted"), "{text}");
    let flows_on: Vec<f64> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('l') && l.contains("-s"))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    assert_eq!(flows_on.len(), 8, "{text}");
    assert!(
        flows_on.iter().all(|&k| k <= 2.0) && flows_on.iter().any(|&k| k >= 1.0),
        "{flows_on:?}"
    );
    assert!(out.path().join("link-heatmap.png").is_file());
}

#[test]
fn a_second_lab_is_refused_and_a_killed_lab_leaves_no_job() {
    if !can_make_namespaces("a_second_lab_is_refused_and_a_killed_lab_leaves_no_job") {
        return;
    }
    let _one_at_a_time = LABS.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lab");
    let long = [
        "--hosts",
        "2",
        "--host-rate",
        "100mbit",
        "--out",
        out.path().to_str().unwrap(),
        "--",
        "--cpu",
        "--threads",
        "1",
        "--limit",
        "10000",
        "--epochs",
        "20",
    ];
    let mut first = Command::new(script)
        .args(long)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for its job.
    let start = std::time::Instant::now();
    while !job_alive() {
        assert!(
            start.elapsed().as_secs() < 60,
            "the first lab's job never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let second = Command::new(script)
        .args(["--hosts", "2", "--", "--cpu", "--epochs", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.trim().lines().count() == 1 && err.contains("another lab is running"),
        "{err}"
    );
    assert!(job_alive(), "the second lab harmed the first one's job");
    // kill -9: no trap runs; the watchdog ends the job and removes the namespaces.
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(
        !job_alive(),
        "a gpu-train of the killed lab is alive 5 s later"
    );
    assert!(
        lab_namespaces().is_empty(),
        "left behind: {:?}",
        lab_namespaces()
    );
}

/// Whether a lab's training job (a `gpu-train --mpi` rank) is running.
fn job_alive() -> bool {
    Command::new("pgrep")
        .args(["-f", "target/release/gpu-train --mpi"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_two_host_switch_and_a_four_host_leaf_spine_carry_the_job_and_leave_nothing() {
    if !can_make_namespaces(
        "a_two_host_switch_and_a_four_host_leaf_spine_carry_the_job_and_leave_nothing",
    ) {
        return;
    }
    lab(2, &["--host-rate", "100mbit"]);
    let _ = lab(
        4,
        &[
            "--leaves",
            "2",
            "--host-rate",
            "100mbit",
            "--uplink-rate",
            "100mbit",
        ],
    );
    // Loss on the wire: 3 % of the TCP packets arriving at each NIC are lost; TCP resends
    // them (counted by each host's kernel) and the job trains on to its end.
    for row in lab(2, &["--host-rate", "100mbit", "--loss", "3"]).1 {
        let (retrans, dropped) = (row[4], row[5]);
        assert!(dropped > 0 && retrans > 0, "{row:?}: no loss, or no resend");
    }
}
