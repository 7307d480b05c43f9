//! `oxmm run FILE.ops`: op scripts (`shared/op-scripts.md`).
//!
//! [`parse()`] turns a script into [`Line`]s, [`run::run_script`] runs them
//! on any [`Backend`] and prints one JSON object per operation; the
//! hosted machine ([`oxmm`]) and the host kernel ([`native::Native`]) are two
//! backends, so the same script's two outputs can be compared line by line.

pub mod native;
pub mod oxmm;
pub mod parse;
pub mod run;

use std::io::Write;
use std::path::Path;

use parse::{parse, Line, Op};
use run::{run_script, Backend, RunError};

/// Parses `src` and runs it on `backend`, printing to `out`. Relative
/// `file=` paths are used as they are (relative to the current directory).
#[allow(dead_code)] // for embedders and tests; `oxmm run` goes through `run_file`
pub fn run_with<B: Backend>(src: &str, backend: &mut B, out: &mut impl Write) -> Result<(), RunError> {
    let lines = parse(src)?;
    run_script(&lines, backend, out)
}

/// Resolves relative `file=` paths of `lines` against `dir` (the script's
/// directory), so a script finds its data files wherever it is run from.
pub fn resolve_files(lines: &mut [Line], dir: &Path) {
    for l in lines {
        if let Op::Map { file: Some(f), .. } = &mut l.op {
            if f.path.is_relative() {
                f.path = dir.join(&f.path);
            }
        }
    }
}

/// Runs the script at `path` on `backend`, printing its output to `out`
/// and an error to stderr: the exit status of `oxmm run` (0; 2 for a
/// script that cannot be run; 1 if the backend broke or the output cannot
/// be written). `Err` only if the script cannot be read. Relative `file=`
/// paths are taken relative to the script's directory.
pub fn run_file<B: Backend>(path: &Path, backend: &mut B, out: &mut impl Write) -> anyhow::Result<i32> {
    use anyhow::Context;
    let src = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let result = parse(&src).map_err(RunError::from).and_then(|mut lines| {
        resolve_files(&mut lines, path.parent().unwrap_or(Path::new(".")));
        run_script(&lines, backend, out)
    });
    match result {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("oxmm: {}: {e}", path.display());
            Ok(e.exit_code())
        }
    }
}

/// `oxmm run --native FILE.ops`: the script on the host kernel, each
/// script process a real process.
pub fn run_native(path: &Path, out: &mut impl Write) -> anyhow::Result<i32> {
    run_file(path, &mut native::Native, out)
}
