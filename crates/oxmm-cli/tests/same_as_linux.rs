//! Every op script under `tests/ops/anon/` and `examples/ops/` gives the same output on the
//! hosted machine as on this machine's Linux kernel, line by line — the
//! op-script contract's purpose — under every reverse-map scheme. The
//! hosted runs also run the invariant checker at the end (`--check`),
//! which verifies the reverse map.

use std::path::{Path, PathBuf};
use std::process::Command;

fn oxmm(args: &[&str], script: &Path) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxmm"));
    c.args(args).arg(script);
    if !args.contains(&"--native") {
        c.args(["--mem-mib", "64"]);
    }
    let out = c.output().expect("run oxmm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scripts() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<PathBuf> = Vec::new();
    for dir in [root.join("tests/ops/anon"), root.join("../../examples/ops")] {
        v.extend(
            std::fs::read_dir(&dir)
                .expect("scripts dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "ops")),
        );
    }
    v.sort();
    assert!(v.len() >= 10, "expected the op scripts of tests/ops/anon and examples/ops");
    v
}

#[test]
fn hosted_output_equals_linux_output() {
    let mut failures = Vec::new();
    for s in scripts() {
        let (nc, nout, nerr) = oxmm(&["run", "--native"], &s);
        assert_eq!(nc, 0, "{}: native run failed: {nerr}", s.display());
        for rmap in ["chains", "object", "none"] {
            let (hc, hout, herr) = oxmm(&["run", "--check", "--rmap", rmap], &s);
            let name = format!("{} (--rmap {rmap})", s.display());
            if hc != 0 {
                failures.push(format!("{name}: hosted run exited {hc}: {herr}"));
                continue;
            }
            for (i, (h, n)) in hout.lines().zip(nout.lines()).enumerate() {
                if h != n {
                    failures.push(format!("{name} output line {}:\n  oxmm:  {h}\n  linux: {n}", i + 1));
                }
            }
            if hout.lines().count() != nout.lines().count() {
                failures.push(format!(
                    "{name}: {} lines from oxmm, {} from Linux",
                    hout.lines().count(),
                    nout.lines().count()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
