//! The binary as a user meets it: bad flags get a one-line error and exit code 2; the
//! subcommands run.

mod common;
use common::gpu_train;

/// The lines of stderr that are ours (Mesa prints its own warnings on headless machines).
fn our_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("gpu-train:"))
        .collect()
}

#[test]
fn bad_values_exit_2_with_one_line() {
    for (args, expect) in [
        (
            vec!["--cpu", "--batch-size", "0"],
            "--batch-size must be at least 1",
        ),
        (
            vec!["--cpu", "--epochs", "0"],
            "--epochs must be at least 1",
        ),
        (vec!["--cpu", "--lr=-1"], "--lr must be a positive number"),
        (
            vec!["--cpu", "--data-dir", "/no/such/dir"],
            "data directory /no/such/dir does not exist",
        ),
    ] {
        let (code, _, err) = gpu_train(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let ours = our_errors(&err);
        assert_eq!(ours.len(), 1, "{args:?}: {err}");
        assert!(ours[0].contains(expect), "{args:?}: {err}");
    }
    // clap's own errors (not a number) also exit 2.
    let (code, _, _) = gpu_train(&["--epochs", "many"]);
    assert_eq!(code, 2);
}

#[test]
fn device_out_of_range_lists_what_exists() {
    let (code, _, err) = gpu_train(&["--device", "99", "--epochs", "1"]);
    assert_eq!(code, 2, "{err}");
    let ours = our_errors(&err);
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].contains("--device 99 does not exist; adapters: 0: ")
            || ours[0].contains("no GPU adapter found: install"),
        "{err}"
    );
}

#[test]
fn cpu_training_prints_summary_epochs_and_final_accuracy() {
    let (code, out, err) = gpu_train(&["--cpu", "--epochs", "2", "--limit", "3000"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("101,632"), "{out}");
    assert!(
        out.contains("epoch  1/2") && out.contains("epoch  2/2"),
        "{out}"
    );
    assert!(
        out.contains("images/s") && out.contains("final test accuracy"),
        "{out}"
    );
}

#[test]
fn gpu_training_names_the_adapter() {
    let Some(_g) = common::gpu("gpu_training_names_the_adapter") else {
        return;
    };
    let (code, out, err) = gpu_train(&["--epochs", "1", "--limit", "640"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("engine: GPU "), "{out}");
    assert!(out.contains("final test accuracy"), "{out}");
}

#[test]
fn devices_and_explain_run() {
    let (code, out, _) = gpu_train(&["devices"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("0: ") || out.contains("no GPU adapter found"),
        "{out}"
    );
    let (code, out, err) = gpu_train(&["explain"]);
    assert_eq!(code, 0, "{err}");
    for s in [
        "0.804",
        "0.019208",
        "-0.0784",
        "1.01738",
        "probability",
        "101,632",
    ] {
        assert!(out.contains(s), "{s} missing:\n{out}");
    }
}

#[test]
fn bench_runs_on_cpu_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut args = vec![
        "bench",
        "--epochs",
        "1",
        "--warmup",
        "0",
        "--limit",
        "640",
        "--json",
        json.to_str().unwrap(),
    ];
    if common::gpu("bench_runs_on_cpu_and_gpu").is_none() {
        args.push("--cpu-only");
    }
    let (code, out, err) = gpu_train(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("speedup") && out.lines().any(|l| l.starts_with("cpu ")),
        "{out}"
    );
    let written = std::fs::read_to_string(&json).unwrap();
    assert!(written.contains("\"path\": \"cpu\""), "{written}");
    if !args.contains(&"--cpu-only") {
        assert!(
            written.contains("gpu staged") && written.contains("gpu resident"),
            "{written}"
        );
    }
}

/// An output path where a device node, a FIFO or a symlink stands is refused, never replaced:
/// as root, `--trace /dev/null` used to rename a regular file over the machine's /dev/null.
/// The nodes are made in a scratch folder (mknod needs root; elsewhere the test says so).
#[test]
fn outputs_are_never_written_through_a_device_node_or_a_symlink() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    let made = std::process::Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    let fifo = dir.path().join("fifo");
    std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    let link = dir.path().join("link");
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep me").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut paths = vec![(fifo.clone(), "a FIFO"), (link.clone(), "a symbolic link")];
    if made {
        paths.push((null.clone(), "a character device"));
    } else {
        eprintln!("NOTE: mknod is not allowed here (not root): the device-node case is left out");
    }
    for (path, kind) in &paths {
        let p = path.to_str().unwrap();
        for args in [
            vec!["--cpu", "--limit", "128", "--epochs", "1", "--trace", p],
            vec!["bench", "--cpu-only", "--limit", "128", "--json", p],
        ] {
            let (code, _, err) = gpu_train(&args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(err.contains(kind), "{args:?}: {err}");
        }
    }
    if made {
        let m = std::fs::symlink_metadata(&null).unwrap();
        assert!(
            m.file_type().is_char_device(),
            "the device node was replaced"
        );
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

/// A training run whose reader goes away (`gpu-train | head -2`) trains on to its end and
/// writes every snapshot: before, `println!` panicked on the broken pipe at the first epoch's line.
#[test]
fn a_training_run_piped_into_head_trains_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("s");
    let line = format!(
        "set -o pipefail; '{}' --cpu --limit 640 --epochs 3 --snapshot-dir '{}' | head -2 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_gpu-train"),
        snaps.display()
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&line)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status.trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = gpu_train::snapshots::SnapshotDir::open(&snaps, 10).unwrap();
    let (_, last) = gpu_train::checkpoint::load(&dir.latest().unwrap().unwrap()).unwrap();
    assert_eq!(
        last.next,
        gpu_train::checkpoint::Position { epoch: 4, step: 0 },
        "{last:?}"
    );
}

/// On a machine with no display, listing adapters and training on adapter 0 print nothing but
/// their own output: before, Mesa's look for a Wayland display printed "error:
/// XDG_RUNTIME_DIR is invalid or not set" two to four times, errors that are not errors.
#[test]
fn a_headless_machine_shows_no_display_errors() {
    let Some(g) = common::gpu("a_headless_machine_shows_no_display_errors") else {
        return;
    };
    let software = g.is_software();
    drop(g);
    for args in [
        vec!["devices"],
        vec!["--device", "0", "--limit", "64", "--epochs", "1"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
            .args(&args)
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("DISPLAY")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("EGL_PLATFORM")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("XDG_RUNTIME_DIR"), "{args:?}: {err}");
        // On a software adapter the engine line says, measured, how it compares with --cpu
        // (it said "expect CPU-like speed", which was not true: lavapipe is 20-60× slower).
        let text = String::from_utf8_lossy(&out.stdout);
        if args[0] == "devices" {
            continue;
        }
        // The engine's line and the notes under it (up to the config line).
        let at = text.find("engine:").unwrap_or_else(|| panic!("{args:?}: no engine line in:\n{text}"));
        let line = &text[at..text[at..].find("config:").map_or(text.len(), |c| at + c)];
        assert_eq!(
            line.contains("software adapter (runs on the CPU)"),
            software,
            "adapter 0 is{} a software adapter: {line}",
            if software { "" } else { " not" }
        );
        if software {
            assert!(
                line.contains("than the CPU path's here") || line.contains("about as fast"),
                "{line}"
            );
        }
    }
}

/// The hardware family (issue 31: tiles of 8 and 16, K split up to 16 ways, 4 or none,
/// register blocks with vec4 loads), forced on whatever adapter 0 is with
/// GPU_TRAIN_KERNEL_FAMILY=hardware: on lavapipe this is how CI checks its members, since the
/// search compares each one it times with the CPU twin before timing it. A fresh cache and a
/// budget that lets the search finish: every member is measured now, none is wrong, and the
/// picks are members of that family (no 8-lane subgroups, no texture mirrors).
#[test]
fn the_hardware_family_is_searched_and_every_member_matches_the_twin() {
    let test = "the_hardware_family_is_searched_and_every_member_matches_the_twin";
    if common::gpu(test).is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
        .args(["--device", "0", "--limit", "256", "--epochs", "1", "-v"])
        .env("XDG_CACHE_HOME", home.path())
        .env("GPU_TRAIN_KERNEL_FAMILY", "hardware")
        .env("GPU_TRAIN_SEARCH_SECONDS", "600")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("matmul per product:"))
        .unwrap_or_else(|| panic!("-v names each product's pick: {stdout}"));
    let timed: usize = line
        .split("searched: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a fresh cache: searched now: {line}"));
    // Each of tiled16's four siblings and tiled16 itself on both products, at the least.
    assert!(timed >= 10, "{timed} kernel/product pairs timed: {line}");
    assert!(!line.contains("left for later"), "the search finished: {line}");
    assert!(!line.contains("wrong against the CPU twin"), "{line}");
    let picks = line.split(" (searched").next().unwrap();
    assert!(!picks.contains("_sg") && !picks.contains(" tk4") && !picks.contains(" tmn4"), "{picks}");
    assert!(stdout.contains("a step is 5 dispatches"), "{stdout}");
}

/// The kernel search's cache ($XDG_CACHE_HOME/gpu-train/matmul-picks.tsv) is a file anyone can
/// edit: a time in it that is no time (negative, NaN, infinite) is measured again, never picked
/// (it was, and the engine line said "-0.01 ms" and that lavapipe ran as fast as the CPU path).
#[test]
fn a_kernel_cache_with_impossible_times_is_measured_again() {
    let test = "a_kernel_cache_with_impossible_times_is_measured_again";
    if common::gpu(test).is_none() {
        return;
    }
    // Every adapter searches (issue 31), so every adapter has a cache to spoil.
    let home = std::env::temp_dir().join(format!("gpu-train-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
            .args(["--device", "0", "--limit", "64", "--epochs", "1", "-v"])
            .env("XDG_CACHE_HOME", &home)
            // The first candidate always runs; nothing after it.
            .env("GPU_TRAIN_SEARCH_SECONDS", "0")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // With -v the engine's lines include each product's pick and its time.
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let at = text.find("engine:").unwrap_or(0);
        text[at..text[at..].find("config:").map_or(text.len(), |c| at + c)].to_string()
    };
    let first = run();
    let cache = home.join("gpu-train").join("matmul-picks.tsv");
    assert!(first.contains(" ms"), "the first run measured: {first}");
    let text = std::fs::read_to_string(&cache).expect("the first run wrote the cache");
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "an empty cache: {}", cache.display());
    let spoiled: String = lines
        .iter()
        .zip(["-5", "NaN", "inf", "-0.0"].iter().cycle())
        .map(|(l, bad)| {
            let (head, _) = l.rsplit_once('\t').unwrap();
            format!("{head}\t{bad}\n")
        })
        .collect();
    std::fs::write(&cache, spoiled).unwrap();
    let second = run();
    for bad in ["-0.", "NaN", "inf"] {
        assert!(!second.contains(&bad.to_string()), "{bad} in: {second}");
    }
    assert!(second.contains(" ms"), "measured again: {second}");
    let _ = std::fs::remove_dir_all(&home);
}

/// Under --precision f16, `--kernels` names a shape that must have an f16 version.
#[test]
fn f16_with_a_kernel_that_has_no_f16_version_is_refused() {
    let Some(g) = common::gpu("f16_with_a_kernel_that_has_no_f16_version_is_refused") else {
        return;
    };
    let f16 = g.features.contains(wgpu::Features::SHADER_F16);
    drop(g);
    let (code, _, err) = gpu_train(&[
        "--precision",
        "f16",
        "--kernels",
        "tiled16",
        "--limit",
        "64",
        "--epochs",
        "1",
    ]);
    assert_eq!(code, 2, "{err}");
    if !f16 {
        // An adapter without f16 in shaders refuses --precision f16 before any kernel is
        // looked at (CI's lavapipe has f16, so there the kernel's refusal below is checked).
        assert!(
            err.contains("does not offer f16") && err.contains("--precision f32"),
            "{err}"
        );
        return;
    }
    assert!(
        err.contains("no f16 version") && err.contains("reg8x4"),
        "{err}"
    );
}

/// Issue 32: a usage error stays one line but keeps clap's tip, and names the --help of the
/// command being parsed.
#[test]
fn usage_errors_keep_clap_tip_and_name_the_subcommand_help() {
    let (code, _, err) = gpu_train(&["--epoch", "3"]);
    assert_eq!(code, 2, "{err}");
    let ours = our_errors(&err);
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].contains("'--epoch'") && ours[0].contains("tip: a similar argument exists: '--epochs'"),
        "{err}"
    );
    assert!(ours[0].ends_with("; see gpu-train --help"), "{err}");
    for args in [vec!["predict", "--bogus"], vec!["predict", "w.safetensors", "--bogus"]] {
        let (code, _, err) = gpu_train(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let ours = our_errors(&err);
        assert_eq!(ours.len(), 1, "{args:?}: {err}");
        assert!(ours[0].ends_with("see gpu-train predict --help"), "{args:?}: {err}");
    }
    let (code, _, err) = gpu_train(&["explain", "--imgae", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'--image'") && err.contains("see gpu-train explain --help"),
        "{err}"
    );
}

/// The `engine:` and `final test accuracy` lines of a run's stdout.
fn engine_and_result(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.starts_with("engine:") || l.contains("final test accuracy"))
        .collect()
}

/// Issue 32: `--device cpu` (PyTorch's spelling) is --cpu: the same engine, the same result.
#[test]
fn device_cpu_trains_as_cpu_does() {
    let run = ["--epochs", "1", "--limit", "640", "--threads", "2"];
    let (code, by_device, err) = gpu_train(&[&["--device", "cpu"][..], &run].concat());
    assert_eq!(code, 0, "{err}");
    let (code, by_flag, err) = gpu_train(&[&["--cpu"][..], &run].concat());
    assert_eq!(code, 0, "{err}");
    let lines = engine_and_result(&by_device);
    assert_eq!(lines.len(), 2, "{by_device}");
    assert!(lines[0].starts_with("engine: CPU"), "{by_device}");
    assert_eq!(lines, engine_and_result(&by_flag));
    // What cannot go with it is refused in one line that names it.
    for (args, expect) in [
        (vec!["--device", "cpu", "--devices", "0,1"], "--devices"),
        (vec!["--device", "cpu", "--cpu"], "--cpu"),
        (vec!["--device", "cpu", "--resident"], "--resident"),
        (vec!["--device", "cpu", "--kernels", "reg8x4"], "--kernels"),
        (vec!["--device", "cuda:0"], "expected cpu or a GPU adapter's index"),
    ] {
        let (code, _, err) = gpu_train(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let ours = our_errors(&err);
        assert_eq!(ours.len(), 1, "{args:?}: {err}");
        assert!(ours[0].contains(expect), "{args:?}: {err}");
    }
}

/// Issue 32: `--help` lists the training options first, then one section per concern, and
/// ends with examples.
#[test]
fn help_lists_training_first_then_sections_then_examples() {
    let (code, out, err) = gpu_train(&["--help"]);
    assert_eq!(code, 0, "{err}");
    let order = [
        "--epochs <",
        "--batch-size <",
        "--lr <",
        "--seed <",
        "\nDevice:",
        "--device <N|cpu>",
        "\nData:",
        "--data-dir <",
        "\nOutputs and snapshots:",
        "--snapshot-dir <",
        "\nParallel and MPI:",
        "--devices <",
        "--mpi",
        "\nNetwork and trace:",
        "--trace <",
        "\nAdvanced:",
        "--kernels <",
        "\nExamples:",
        "gpu-train --device cpu",
        "--resume",
        "gpu-train network run.json",
    ];
    let mut from = 0;
    for want in order {
        let at = out[from..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} not found after byte {from} of --help:\n{out}"));
        from += at + want.len();
    }
    // Every flag of a training run is still listed, each once.
    for flag in ["--threads <", "--resident", "--limit <", "--keep <", "--metrics-every <", "--fault <", "--nic <", "--precision <", "--hidden <"] {
        assert_eq!(out.matches(flag).count(), 1, "{flag}:\n{out}");
    }
}

/// Issue 32: completion scripts a shell accepts, and a manual page that roff reads.
#[test]
fn completions_and_man_page_are_written() {
    let (code, script, err) = gpu_train(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(script.contains("--epochs"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpu-train.bash");
    std::fs::write(&file, &script).unwrap();
    let check = std::process::Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish"] {
        let (code, script, err) = gpu_train(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(script.contains("epochs"), "{shell}: {script}");
    }
    let (code, _, err) = gpu_train(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");

    let (code, page, err) = gpu_train(&["man"]);
    assert_eq!(code, 0, "{err}");
    // Past the two lines that define the quote character, the page opens with its title.
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie") && !l.starts_with(".el"))
        .unwrap_or_default();
    assert!(first.starts_with(".TH gpu-train 1"), "{page}");
    assert!(page.contains("\\-\\-epochs"), "{page}");
    let out = dir.path().join("man1");
    let (code, _, err) = gpu_train(&["man", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for name in ["gpu-train.1", "gpu-train-predict.1", "gpu-train-completions.1"] {
        let text = std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name}: {text}");
    }
}

/// Issue 32: `predict --show` draws each digit in text beside its table; predict has no
/// --limit (it reads only the images it is asked for).
#[test]
fn predict_shows_the_digit_and_has_no_limit() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let s = snaps.to_str().unwrap();
    let (code, _, err) = gpu_train(&["--cpu", "--limit", "640", "--epochs", "1", "--snapshot-dir", s]);
    assert_eq!(code, 0, "{err}");
    let snapshot = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .expect("a snapshot");
    let snap = snapshot.to_str().unwrap();
    let (code, out, err) = gpu_train(&["predict", snap, "--index", "3", "--show"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let title = lines
        .iter()
        .position(|l| l.starts_with("test image 3"))
        .unwrap_or_else(|| panic!("{out}"));
    let drawing = &lines[title + 1..title + 29];
    let ramp = " .:-=+*#%@";
    for l in drawing {
        assert_eq!(l.chars().count(), 28, "{l:?}\n{out}");
        assert!(l.chars().all(|c| ramp.contains(c)), "{l:?}\n{out}");
    }
    assert!(lines[title + 29].contains("class"), "the table follows the drawing:\n{out}");
    // The drawing is the image: blank where a pixel is black, `@` where it is white, and a
    // brighter pixel never drawn with a darker character than a dimmer one.
    let data = gpu_train::data::bundled_dir();
    let test = gpu_train::data::load_test_limited(&data, 4).unwrap();
    let pixels = test.image(3);
    let drawn: Vec<usize> = drawing
        .iter()
        .flat_map(|l| l.chars())
        .map(|c| ramp.find(c).unwrap())
        .collect();
    let mut by_pixel: Vec<(u8, usize)> = pixels.iter().copied().zip(drawn.iter().copied()).collect();
    by_pixel.sort();
    assert!(by_pixel.windows(2).all(|w| w[0].1 <= w[1].1), "{out}");
    for (p, c) in &by_pixel {
        if *p == 0 {
            assert_eq!(*c, 0, "{out}");
        }
        if *p == 255 {
            assert_eq!(*c, ramp.len() - 1, "{out}");
        }
    }
    assert!(by_pixel.iter().any(|&(p, _)| p == 255), "test image 3 has white strokes");
    // Without --show, no drawing.
    let (code, plain, err) = gpu_train(&["predict", snap, "--index", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(plain.lines().nth(2).is_some_and(|l| l.contains("class")), "{plain}");

    let (code, _, err) = gpu_train(&["predict", snap, "--index", "0", "--limit", "5"]);
    assert_eq!(code, 2, "{err}");
    let ours = our_errors(&err);
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].contains("'--limit'") && ours[0].contains("gpu-train predict --help"), "{err}");
}

/// GPU_TRAIN_KERNEL_FAMILY names one family, "hardware"; anything else is said, not ignored.
#[test]
fn an_unknown_kernel_family_is_named_in_a_warning() {
    if common::gpu("an_unknown_kernel_family_is_named_in_a_warning").is_none() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-train"))
        .args(["--device", "0", "--limit", "64", "--epochs", "1", "--kernels", "reg8x4"])
        .env("GPU_TRAIN_KERNEL_FAMILY", "hardwar")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("GPU_TRAIN_KERNEL_FAMILY=hardwar") && err.contains("\"hardware\""), "{err}");
}
