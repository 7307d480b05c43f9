//! The native backend on the example scripts of `examples/ops`: the host
//! kernel's answers that the contract (`shared/op-scripts.md`) promises.

// The CLI is a binary crate; its `ops` module is compiled into this test
// as it is (it depends only on the crate's dependencies).
#[allow(dead_code, unused_imports)]
#[path = "../src/ops/mod.rs"]
mod ops;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ops").join(name)
}

/// Runs a script natively: its exit status and its output, by line.
fn run(path: &Path) -> (i32, BTreeMap<u64, Value>) {
    let mut out = Vec::new();
    let code = ops::run_native(path, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut by_line = BTreeMap::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        by_line.insert(v["line"].as_u64().unwrap(), v);
    }
    (code, by_line)
}

fn stat(anon: u64, file: u64, shmem: u64) -> Value {
    json!({"op":"stat","ok":true,"rss_anon":anon,"rss_file":file,"rss_shmem":shmem,"swap":0})
}

/// Checks `want` (without `line`) against the output of line `n`.
#[track_caller]
fn check(out: &BTreeMap<u64, Value>, n: u64, mut want: Value) {
    want.as_object_mut().unwrap().insert("line".into(), json!(n));
    assert_eq!(out.get(&n), Some(&want), "line {n}");
}

#[test]
fn basic() {
    let (code, out) = run(&example("basic.ops"));
    assert_eq!(code, 0);
    check(&out, 4, stat(0, 0, 0));
    check(&out, 6, stat(0, 0, 0)); // a read touch maps the zero page only
    check(&out, 7, json!({"op":"mincore","ok":true,"resident":16}));
    check(&out, 9, stat(16, 0, 0)); // a write touch of 16 pages
    check(&out, 11, json!({"op":"sum","ok":true,"value":16384}));
    check(&out, 14, json!({"op":"touch","ok":false,"fault":"segv","addr_off":16384}));
    check(&out, 17, json!({"op":"sum","ok":false,"fault":"segv","addr_off":20480}));
    check(&out, 19, stat(8, 0, 0)); // dontneed dropped 8 pages
    check(&out, 20, json!({"op":"sum","ok":true,"value":0}));
    check(&out, 23, json!({"op":"touch","ok":false,"fault":"segv","addr_off":0}));
    check(&out, 24, stat(0, 0, 0));
    assert_eq!(out.len(), 23, "every operation answers");
}

#[test]
fn errno() {
    let (code, out) = run(&example("errno.ops"));
    assert_eq!(code, 0);
    let err = |e: &str| json!({"ok":false,"errno":e});
    let with_op = |op: &str, mut v: Value| {
        v.as_object_mut().unwrap().insert("op".into(), json!(op));
        v
    };
    check(&out, 3, with_op("map", err("EINVAL"))); // zero length
    check(&out, 5, with_op("unmap", err("EINVAL"))); // unaligned
    check(&out, 6, with_op("unmap", err("EINVAL"))); // zero length
    check(&out, 7, json!({"op":"unmap","ok":true})); // length rounds up
    check(&out, 8, with_op("protect", err("EINVAL")));
    check(&out, 9, json!({"op":"protect","ok":true})); // zero length
    check(&out, 11, with_op("protect", err("ENOMEM"))); // past the mapping
    check(&out, 12, with_op("advise", err("EINVAL")));
    check(&out, 14, with_op("advise", err("ENOMEM")));
    check(&out, 15, with_op("mincore", err("EINVAL")));
    check(&out, 16, json!({"op":"mincore","ok":true,"resident":0}));
    check(&out, 17, with_op("mincore", err("ENOMEM"))); // unmapped page
    check(&out, 19, with_op("remap", err("EINVAL")));
    check(&out, 20, with_op("remap", err("EFAULT")));
    check(&out, 24, json!({"op":"sum","ok":true,"value":16}));
    check(&out, 27, stat(32, 0, 0));
    check(&out, 29, stat(1, 0, 0));
    check(&out, 31, json!({"op":"touch","ok":false,"fault":"segv","addr_off":4096}));
    check(&out, 33, json!({"op":"fill","ok":false,"fault":"segv","addr_off":4096}));
    check(&out, 34, json!({"op":"sum","ok":true,"value":30}));
}

#[test]
fn fork() {
    let (code, out) = run(&example("fork.ops"));
    assert_eq!(code, 0);
    check(&out, 7, stat(16, 0, 8));
    check(&out, 9, stat(16, 0, 0)); // baseline inherited exactly
    check(&out, 11, json!({"op":"sum","ok":true,"value":98304}));
    check(&out, 12, stat(16, 0, 8));
    check(&out, 14, json!({"op":"sum","ok":true,"value":1}));
    check(&out, 15, json!({"op":"sum","ok":true,"value":36864}));
    check(&out, 17, json!({"op":"sum","ok":true,"value":4}));
    check(&out, 20, stat(16, 0, 0));
    check(&out, 23, json!({"op":"exit","ok":true}));
}

#[test]
fn file() {
    let (code, out) = run(&example("file.ops"));
    assert_eq!(code, 0);
    check(&out, 5, json!({"op":"touch","ok":false,"fault":"bus","addr_off":4096}));
    check(&out, 6, stat(0, 1, 0));
    check(&out, 10, stat(1, 0, 0));
    check(&out, 12, json!({"op":"touch","ok":false,"fault":"bus","addr_off":0}));
    check(&out, 13, json!({"op":"map","ok":false,"errno":"EINVAL"}));
    check(&out, 15, stat(1, 0, 0));
}

#[test]
fn script_errors_stop_with_status_2() {
    let dir = std::env::temp_dir().join(format!("oxmm-native-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, src, lines) in [
        ("parse.ops", "proc A\nmapp A x 4K rw private\n", 0),
        ("region.ops", "proc A\nmap A x 4K rw private\ntouch A y 0 4K read\n", 2),
        ("twice.ops", "proc A\nproc A\n", 1),
        ("forkto.ops", "proc A\nproc B\nfork A B\n", 2),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, src).unwrap();
        let (code, out) = run(&path);
        assert_eq!(code, 2, "{name}");
        assert_eq!(out.len(), lines, "{name}: the lines before the error ran");
    }
    // A `file=` that cannot be opened is a broken run, not an errno.
    let path = dir.join("missing.ops");
    std::fs::write(&path, "proc A\nmap A x 4K r private file=no-such-file\n").unwrap();
    assert_eq!(run(&path).0, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
