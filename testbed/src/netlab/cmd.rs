//! Running external commands (`ip`, `nft`, `vtysh`, ...) with their
//! command line, exit status and stderr in every error.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// No lab command should take this long; a hung one fails instead of
/// hanging the test.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// `prog arg1 arg2` with arguments containing spaces quoted.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(char::is_whitespace) || a.contains('"') {
            parts.push(format!("{a:?}"));
        } else {
            parts.push(a.into_owned());
        }
    }
    parts.join(" ")
}

/// Runs `cmd` to completion (killed after [`COMMAND_TIMEOUT`]), feeding it
/// `stdin` if given. A non-zero exit is not an error here.
pub(crate) fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<CmdOutput> {
    let desc = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{desc}`"))?;
    let mut out_pipe = child.stdout.take().context("stdout pipe missing")?;
    let mut err_pipe = child.stderr.take().context("stderr pipe missing")?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    // A command that exits without reading its input is judged by its
    // exit status, not by the broken pipe.
    if let Some(data) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        let _ = pipe.write_all(data);
    }
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("`{desc}` did not finish within {COMMAND_TIMEOUT:?}; killed");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e).with_context(|| format!("waiting for `{desc}`")),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(CmdOutput {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Runs `cmd` and returns its stdout; a non-zero exit is an error naming the
/// command, its status and its stderr (or stdout when stderr is empty).
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    run_with_input(cmd, None)
}

pub(crate) fn run_with_input(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String> {
    let desc = describe(cmd);
    let out = output(cmd, stdin)?;
    check(&desc, out)
}

pub(crate) fn check(desc: &str, out: CmdOutput) -> Result<String> {
    if out.status.success() {
        return Ok(out.stdout);
    }
    let detail = if out.stderr.trim().is_empty() {
        out.stdout.trim()
    } else {
        out.stderr.trim()
    };
    bail!("`{desc}` failed ({}): {detail}", out.status)
}

/// `Command::new(argv[0]).args(argv[1..])`.
pub(crate) fn command(argv: &[&str]) -> Result<Command> {
    let (prog, args) = argv.split_first().context("empty command line")?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    Ok(cmd)
}

/// Runs `argv` in the root namespace and returns stdout.
pub(crate) fn host(argv: &[&str]) -> Result<String> {
    run(&mut command(argv)?)
}
