//! Every op script under `tests/ops/anon/` gives the same output on the
//! hosted machine as on this machine's Linux kernel, line by line — the
//! op-script contract's purpose. The hosted run also runs the invariant
//! checker at the end (`--check`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn oxmm(args: &[&str], script: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oxmm"))
        .args(args)
        .arg(script)
        .args(["--mem-mib", "64"].iter().filter(|_| !args.contains(&"--native")))
        .output()
        .expect("run oxmm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ops/anon");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scripts dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ops"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "expected the anonymous-memory scripts in {}", dir.display());
    v
}

#[test]
fn hosted_output_equals_linux_output() {
    let mut failures = Vec::new();
    for s in scripts() {
        let (hc, hout, herr) = oxmm(&["run", "--check"], &s);
        let (nc, nout, nerr) = oxmm(&["run", "--native"], &s);
        assert_eq!(nc, 0, "{}: native run failed: {nerr}", s.display());
        if hc != 0 {
            failures.push(format!("{}: hosted run exited {hc}: {herr}", s.display()));
            continue;
        }
        for (i, (h, n)) in hout.lines().zip(nout.lines()).enumerate() {
            if h != n {
                failures.push(format!("{} output line {}:\n  oxmm:  {h}\n  linux: {n}", s.display(), i + 1));
            }
        }
        if hout.lines().count() != nout.lines().count() {
            failures.push(format!(
                "{}: {} lines from oxmm, {} from Linux",
                s.display(),
                hout.lines().count(),
                nout.lines().count()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
