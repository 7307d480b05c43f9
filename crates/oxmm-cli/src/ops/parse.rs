//! The op-script parser: text in, [`Line`]s out, or a [`ScriptError`]
//! naming the first malformed line.
//!
//! The syntax is the contract of `shared/op-scripts.md`: one operation per
//! line, `#` starts a comment, tokens are separated by spaces or tabs,
//! numbers are decimal or `0x` hex with an optional `K`/`M`/`G` suffix
//! (powers of 1024), names are `[A-Za-z0-9_]+`. Parsing never panics: a
//! number that does not fit in 64 bits is an error like any other.

use std::fmt;
use std::path::PathBuf;

use oxmm::mm::flags::{Advice, Prot};

/// A script that cannot be run: the line (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ScriptError {
    /// The script line, 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// One operation and the line it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The script line, 1-based.
    pub line: usize,
    /// The operation.
    pub op: Op,
}

/// The kind of access of `touch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Load the first byte of each page.
    Read,
    /// Store `0x01` to the first byte of each page.
    Write,
}

/// `file=PATH[@OFFSET]` of `map`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileArg {
    /// The file, as written (relative paths are resolved by the caller).
    pub path: PathBuf,
    /// The file offset of the mapping's first byte.
    pub offset: u64,
}

/// A part of a region: `R+off .. R+off+size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The process.
    pub proc: String,
    /// The region of that process.
    pub region: String,
    /// Offset from the region's start.
    pub off: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One operation of a script (see `shared/op-scripts.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `proc P`
    Proc {
        /// The new process.
        proc: String,
    },
    /// `map P R SIZE PROT SHARING [file=PATH[@OFFSET]]`
    Map {
        /// The process.
        proc: String,
        /// The region name it binds.
        region: String,
        /// Length in bytes.
        size: u64,
        /// Protection.
        prot: Prot,
        /// `shared` (true) or `private`.
        shared: bool,
        /// The file, or `None` for anonymous memory.
        file: Option<FileArg>,
    },
    /// `unmap P R OFF SIZE`
    Unmap(Range),
    /// `protect P R OFF SIZE PROT`
    Protect(Range, Prot),
    /// `advise P R OFF SIZE ADVICE`
    Advise(Range, Advice),
    /// `touch P R OFF SIZE read|write`
    Touch(Range, Access),
    /// `fill P R OFF SIZE BYTE`
    Fill(Range, u8),
    /// `sum P R OFF SIZE`
    Sum(Range),
    /// `remap P R NEWSIZE`
    Remap {
        /// The process.
        proc: String,
        /// The region, rebound on success.
        region: String,
        /// The new length in bytes.
        new_size: u64,
    },
    /// `fork P C`
    Fork {
        /// The process that forks.
        parent: String,
        /// The new process.
        child: String,
    },
    /// `exit P`
    Exit {
        /// The process.
        proc: String,
    },
    /// `stat P`
    Stat {
        /// The process.
        proc: String,
    },
    /// `mincore P R OFF SIZE`
    Mincore(Range),
}

impl Op {
    /// The operation's keyword, as the output's `"op"` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Proc { .. } => "proc",
            Op::Map { .. } => "map",
            Op::Unmap(_) => "unmap",
            Op::Protect(..) => "protect",
            Op::Advise(..) => "advise",
            Op::Touch(..) => "touch",
            Op::Fill(..) => "fill",
            Op::Sum(_) => "sum",
            Op::Remap { .. } => "remap",
            Op::Fork { .. } => "fork",
            Op::Exit { .. } => "exit",
            Op::Stat { .. } => "stat",
            Op::Mincore(_) => "mincore",
        }
    }
}

/// Parses a whole script. Blank and comment-only lines produce nothing.
pub fn parse(src: &str) -> Result<Vec<Line>, ScriptError> {
    let mut lines = Vec::new();
    for (i, text) in src.lines().enumerate() {
        let line = i + 1;
        if let Some(op) = parse_line(text).map_err(|message| ScriptError { line, message })? {
            lines.push(Line { line, op });
        }
    }
    Ok(lines)
}

/// The usage of each operation, for error messages.
fn usage(op: &str) -> Option<&'static str> {
    Some(match op {
        "proc" => "proc P",
        "map" => "map P R SIZE PROT SHARING [file=PATH[@OFFSET]]",
        "unmap" => "unmap P R OFF SIZE",
        "protect" => "protect P R OFF SIZE PROT",
        "advise" => "advise P R OFF SIZE ADVICE",
        "touch" => "touch P R OFF SIZE read|write",
        "fill" => "fill P R OFF SIZE BYTE",
        "sum" => "sum P R OFF SIZE",
        "remap" => "remap P R NEWSIZE",
        "fork" => "fork P C",
        "exit" => "exit P",
        "stat" => "stat P",
        "mincore" => "mincore P R OFF SIZE",
        _ => return None,
    })
}

/// Parses one line; `Ok(None)` for a blank or comment line.
fn parse_line(text: &str) -> Result<Option<Op>, String> {
    let code = text.split('#').next().unwrap_or("");
    let toks: Vec<&str> = code.split([' ', '\t']).filter(|t| !t.is_empty()).collect();
    let Some((&keyword, args)) = toks.split_first() else {
        return Ok(None);
    };
    let Some(usage) = usage(keyword) else {
        return Err(format!("unknown operation `{keyword}`"));
    };
    // `map` has one optional argument; every other operation a fixed count.
    let want = usage.split(' ').filter(|t| !t.starts_with('[')).count() - 1;
    let optional = usize::from(keyword == "map");
    if args.len() < want || args.len() > want + optional {
        return Err(format!(
            "`{keyword}` takes {want}{} arguments, got {}: usage `{usage}`",
            if optional > 0 { " or more" } else { "" },
            args.len()
        ));
    }
    let range = || -> Result<Range, String> {
        Ok(Range { proc: name(args[0])?, region: name(args[1])?, off: number(args[2])?, size: number(args[3])? })
    };
    let op = match keyword {
        "proc" => Op::Proc { proc: name(args[0])? },
        "map" => Op::Map {
            proc: name(args[0])?,
            region: name(args[1])?,
            size: number(args[2])?,
            prot: prot(args[3])?,
            shared: sharing(args[4])?,
            file: args.get(5).map(|t| file_arg(t)).transpose()?,
        },
        "unmap" => Op::Unmap(range()?),
        "protect" => Op::Protect(range()?, prot(args[4])?),
        "advise" => Op::Advise(range()?, advice(args[4])?),
        "touch" => Op::Touch(range()?, access(args[4])?),
        "fill" => Op::Fill(range()?, byte(args[4])?),
        "sum" => Op::Sum(range()?),
        "remap" => Op::Remap { proc: name(args[0])?, region: name(args[1])?, new_size: number(args[2])? },
        "fork" => Op::Fork { parent: name(args[0])?, child: name(args[1])? },
        "exit" => Op::Exit { proc: name(args[0])? },
        "stat" => Op::Stat { proc: name(args[0])? },
        "mincore" => Op::Mincore(range()?),
        _ => return Err(format!("unknown operation `{keyword}`")),
    };
    Ok(Some(op))
}

/// A process or region name: `[A-Za-z0-9_]+`.
pub fn name(tok: &str) -> Result<String, String> {
    if !tok.is_empty() && tok.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(tok.to_owned())
    } else {
        Err(format!("bad name `{tok}` (names are [A-Za-z0-9_]+)"))
    }
}

/// A number: decimal or `0x` hex, optional `K`, `M` or `G` suffix.
pub fn number(tok: &str) -> Result<u64, String> {
    let (digits, scale) = match tok.as_bytes().last() {
        Some(b'K') => (&tok[..tok.len() - 1], 1u64 << 10),
        Some(b'M') => (&tok[..tok.len() - 1], 1u64 << 20),
        Some(b'G') => (&tok[..tok.len() - 1], 1u64 << 30),
        _ => (tok, 1),
    };
    let (digits, radix) = match digits.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None => (digits, 10),
    };
    // `from_str_radix` would also take a sign; only digits are numbers here.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(format!("bad number `{tok}`"));
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("number `{tok}` does not fit in 64 bits"))
}

fn prot(tok: &str) -> Result<Prot, String> {
    Ok(match tok {
        "none" => Prot::NONE,
        "r" => Prot::READ,
        "rw" => Prot::RW,
        "rx" => Prot(Prot::READ.0 | Prot::EXEC.0),
        "rwx" => Prot(Prot::RW.0 | Prot::EXEC.0),
        _ => return Err(format!("bad protection `{tok}` (none, r, rw, rx or rwx)")),
    })
}

fn sharing(tok: &str) -> Result<bool, String> {
    match tok {
        "private" => Ok(false),
        "shared" => Ok(true),
        _ => Err(format!("bad sharing `{tok}` (private or shared)")),
    }
}

fn advice(tok: &str) -> Result<Advice, String> {
    Ok(match tok {
        "normal" => Advice::Normal,
        "random" => Advice::Random,
        "sequential" => Advice::Sequential,
        "willneed" => Advice::WillNeed,
        "dontneed" => Advice::DontNeed,
        "hugepage" => Advice::HugePage,
        "nohugepage" => Advice::NoHugePage,
        "cold" => Advice::Cold,
        "pageout" => Advice::PageOut,
        _ => {
            return Err(format!(
                "bad advice `{tok}` (normal, random, sequential, willneed, dontneed, \
                 hugepage, nohugepage, cold or pageout)"
            ))
        }
    })
}

fn access(tok: &str) -> Result<Access, String> {
    match tok {
        "read" => Ok(Access::Read),
        "write" => Ok(Access::Write),
        _ => Err(format!("bad access `{tok}` (read or write)")),
    }
}

fn byte(tok: &str) -> Result<u8, String> {
    let n = number(tok)?;
    u8::try_from(n).map_err(|_| format!("byte `{tok}` is not in 0..=255"))
}

/// `file=PATH[@OFFSET]`; the offset is after the last `@`.
fn file_arg(tok: &str) -> Result<FileArg, String> {
    let Some(spec) = tok.strip_prefix("file=") else {
        return Err(format!("unexpected `{tok}` (expected file=PATH[@OFFSET])"));
    };
    let (path, offset) = match spec.rsplit_once('@') {
        Some((path, off)) => (path, number(off)?),
        None => (spec, 0),
    };
    if path.is_empty() {
        return Err(format!("empty path in `{tok}`"));
    }
    Ok(FileArg { path: PathBuf::from(path), offset })
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(src: &str) -> Op {
        let lines = parse(src).unwrap();
        assert_eq!(lines.len(), 1, "{src}");
        lines.into_iter().next().unwrap().op
    }

    fn err(src: &str) -> ScriptError {
        parse(src).unwrap_err()
    }

    fn r(off: u64, size: u64) -> Range {
        Range { proc: "A".into(), region: "x".into(), off, size }
    }

    #[test]
    fn every_operation() {
        assert_eq!(one("proc A"), Op::Proc { proc: "A".into() });
        assert_eq!(
            one("map A x 64K rw private"),
            Op::Map { proc: "A".into(), region: "x".into(), size: 65536, prot: Prot::RW, shared: false, file: None }
        );
        assert_eq!(
            one("map A x 1M rx shared file=/tmp/f@0x2000"),
            Op::Map {
                proc: "A".into(),
                region: "x".into(),
                size: 1 << 20,
                prot: Prot(5),
                shared: true,
                file: Some(FileArg { path: "/tmp/f".into(), offset: 0x2000 })
            }
        );
        match one("map A x 4K none private file=a@b@4K") {
            Op::Map { file: Some(f), prot, .. } => {
                assert_eq!(f, FileArg { path: "a@b".into(), offset: 4096 });
                assert_eq!(prot, Prot::NONE);
            }
            other => panic!("{other:?}"),
        }
        match one("map A x 4K rwx private file=data.bin") {
            Op::Map { file: Some(f), prot, .. } => {
                assert_eq!(f, FileArg { path: "data.bin".into(), offset: 0 });
                assert_eq!(prot, Prot(7));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(one("unmap A x 4K 8K"), Op::Unmap(r(4096, 8192)));
        assert_eq!(one("protect A x 0 4K r"), Op::Protect(r(0, 4096), Prot::READ));
        assert_eq!(one("advise A x 0 4K dontneed"), Op::Advise(r(0, 4096), Advice::DontNeed));
        assert_eq!(one("touch A x 0 4K read"), Op::Touch(r(0, 4096), Access::Read));
        assert_eq!(one("touch A x 0 4K write"), Op::Touch(r(0, 4096), Access::Write));
        assert_eq!(one("fill A x 1 2 0xff"), Op::Fill(r(1, 2), 255));
        assert_eq!(one("sum A x 0 1G"), Op::Sum(r(0, 1 << 30)));
        assert_eq!(one("remap A x 2M"), Op::Remap { proc: "A".into(), region: "x".into(), new_size: 2 << 20 });
        assert_eq!(one("fork A B_2"), Op::Fork { parent: "A".into(), child: "B_2".into() });
        assert_eq!(one("exit A"), Op::Exit { proc: "A".into() });
        assert_eq!(one("stat A"), Op::Stat { proc: "A".into() });
        assert_eq!(one("mincore A x 0 0"), Op::Mincore(r(0, 0)));
        for (name, adv) in [
            ("normal", Advice::Normal),
            ("random", Advice::Random),
            ("sequential", Advice::Sequential),
            ("willneed", Advice::WillNeed),
            ("hugepage", Advice::HugePage),
            ("nohugepage", Advice::NoHugePage),
            ("cold", Advice::Cold),
            ("pageout", Advice::PageOut),
        ] {
            assert_eq!(one(&format!("advise A x 0 4K {name}")), Op::Advise(r(0, 4096), adv));
        }
    }

    #[test]
    fn names_are_op_keywords() {
        for src in [
            "proc A",
            "map A x 1 r private",
            "unmap A x 0 1",
            "protect A x 0 1 r",
            "advise A x 0 1 cold",
            "touch A x 0 1 read",
            "fill A x 0 1 1",
            "sum A x 0 1",
            "remap A x 1",
            "fork A B",
            "exit A",
            "stat A",
            "mincore A x 0 1",
        ] {
            assert_eq!(one(src).name(), src.split(' ').next().unwrap());
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(number("0"), Ok(0));
        assert_eq!(number("4096"), Ok(4096));
        assert_eq!(number("0x1000"), Ok(4096));
        assert_eq!(number("0xAbC"), Ok(0xabc));
        assert_eq!(number("4K"), Ok(4096));
        assert_eq!(number("0x10K"), Ok(16 * 1024));
        assert_eq!(number("3M"), Ok(3 << 20));
        assert_eq!(number("2G"), Ok(2 << 30));
        assert_eq!(number("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(number("0xffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(number("17179869183G"), Ok(17179869183 << 30));
        for bad in ["", "K", "0x", "0xK", "-1", "+1", "1.5", "1k", "1KK", "0X10", "1T", "ten", "1_000", "0x0x1", " 1"] {
            assert!(number(bad).is_err(), "{bad:?} parsed");
        }
        for big in
            ["18446744073709551616", "0x10000000000000000", "17179869184G", "0x400000000G", "99999999999999999999K"]
        {
            assert!(number(big).unwrap_err().contains("64 bits"), "{big}");
        }
    }

    #[test]
    fn comments_blank_lines_and_tabs() {
        let src = "# header\n\n   \nproc A # the process\n\tmap\tA  x\t4K rw private#c\n#map A y 1 r private\n";
        let lines = parse(src).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].line, 4);
        assert_eq!(lines[1].line, 5);
        assert_eq!(lines[1].op.name(), "map");
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("proc A\r\n").unwrap().len(), 1, "CRLF line ends");
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("proc A\n\n\n\n\n\nmapp A x 4K rw private", "line 7: unknown operation `mapp`"),
            ("proc", "line 1: `proc` takes 1 arguments, got 0"),
            ("proc A B", "line 1: `proc` takes 1 arguments, got 2"),
            ("proc A-B", "line 1: bad name `A-B`"),
            ("map A x 4K rw", "line 1: `map` takes 5 or more arguments, got 4"),
            ("map A x 4K rw private file=a extra", "line 1: `map` takes 5 or more arguments, got 7"),
            ("map A x 4Q rw private", "line 1: bad number `4Q`"),
            ("map A x 4K wr private", "line 1: bad protection `wr`"),
            ("map A x 4K rw public", "line 1: bad sharing `public`"),
            ("map A x 4K rw private path=a", "line 1: unexpected `path=a`"),
            ("map A x 4K rw private file=", "line 1: empty path"),
            ("map A x 4K rw private file=@4K", "line 1: empty path"),
            ("map A x 4K rw private file=a@zz", "line 1: bad number `zz`"),
            ("map A x 99999999999G rw private", "line 1: number `99999999999G` does not fit"),
            ("unmap A x 0", "line 1: `unmap` takes 4 arguments, got 3"),
            ("protect A x 0 4K w", "line 1: bad protection `w`"),
            ("advise A x 0 4K free", "line 1: bad advice `free`"),
            ("touch A x 0 4K rw", "line 1: bad access `rw`"),
            ("fill A x 0 4K 256", "line 1: byte `256` is not in 0..=255"),
            ("fill A x 0 4K 1K", "line 1: byte `1K`"),
            ("sum A x 0", "line 1: `sum` takes 4 arguments"),
            ("remap A x", "line 1: `remap` takes 3 arguments"),
            ("fork A", "line 1: `fork` takes 2 arguments"),
            ("exit", "line 1: `exit` takes 1 arguments"),
            ("stat A B", "line 1: `stat` takes 1 arguments"),
            ("mincore A x 0 0x", "line 1: bad number `0x`"),
            ("PROC A", "line 1: unknown operation `PROC`"),
            ("proc Å", "line 1: bad name `Å`"),
        ];
        for (src, want) in cases {
            let e = err(src).to_string();
            assert!(e.starts_with(want), "{src:?}: got {e:?}, want {want:?}");
        }
        assert_eq!(err("proc A\nproc\n").line, 2);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(src in "\\PC{0,200}") {
            let _ = parse(&src);
        }

        #[test]
        fn near_misses_never_panic(
            op in prop::sample::select(vec![
                "proc", "map", "unmap", "protect", "advise", "touch", "fill", "sum",
                "remap", "fork", "exit", "stat", "mincore", "x",
            ]),
            args in prop::collection::vec(
                prop_oneof![
                    "[A-Za-z0-9_]{1,4}",
                    "(0x)?[0-9a-fA-F]{0,20}[KMG]?",
                    prop::sample::select(vec![
                        "r", "rw", "rx", "rwx", "none", "private", "shared", "read",
                        "write", "dontneed", "file=", "file=a@", "file=@", "file=x@0x1K",
                        "@", "#", "\t", "0xffffffffffffffffG", "255", "256",
                    ]).prop_map(String::from),
                ],
                0..8,
            ),
        ) {
            let line = format!("{op} {}", args.join(" "));
            if let Err(e) = parse(&line) {
                prop_assert_eq!(e.line, 1);
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}
