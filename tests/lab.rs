//! scripts/lab end to end: an emulated cluster of network namespaces, veth NICs and Linux
//! bridges (one switch, or a 2:1 leaf-spine), a `--mpi` job across it, the NICs' own counters
//! in the trace, and nothing left behind. Needs root (CI runs as root) and Open MPI; where
//! namespaces cannot be made the test says so and does nothing.
#![cfg(feature = "mpi")]

use std::process::Command;

fn can_make_namespaces() -> bool {
    let ok = Command::new("ip")
        .args(["netns", "add", "gtlab-testprobe"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("ip")
            .args(["netns", "delete", "gtlab-testprobe"])
            .status();
    }
    ok
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
fn lab(hosts: usize, topology: &[&str]) -> Vec<Vec<u64>> {
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
    rows
}

#[test]
fn a_two_host_switch_and_a_four_host_leaf_spine_carry_the_job_and_leave_nothing() {
    if !can_make_namespaces() {
        eprintln!("SKIPPED: network namespaces cannot be made here (needs root or CAP_NET_ADMIN)");
        return;
    }
    lab(2, &["--host-rate", "100mbit"]);
    lab(
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
    for row in lab(2, &["--host-rate", "100mbit", "--loss", "3"]) {
        let (retrans, dropped) = (row[4], row[5]);
        assert!(dropped > 0 && retrans > 0, "{row:?}: no loss, or no resend");
    }
}
