//! The one door to external tools (`qemu-img`, `btrfs`, `lvcreate`,
//! `zfs`, `rbd`, `iscsiadm`, `mount` ...). Plugins build a [`Cmd`] and hand
//! it to a [`Runner`]: the real one runs it, the recording one used by the
//! golden tests writes it down and answers with captured output.

use crate::error::{Result, StorageError};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// A command line: program and arguments, never through a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Cmd {
        self.args.push(arg.as_ref().to_string());
        self
    }
}

impl std::fmt::Display for Cmd {
    /// The command as one line, for logs and golden files.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            if a.is_empty() || a.contains([' ', '\'', '"']) {
                write!(f, " '{}'", a.replace('\'', "'\\''"))?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

/// Runs commands for a plugin.
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion and returns its standard output; a non-zero
    /// exit is an error carrying the tool's standard error.
    fn run(&self, cmd: &Cmd) -> Result<String>;

    /// Runs `cmd` with its standard output copied into `out` (exports).
    fn run_to(&self, cmd: &Cmd, out: &mut dyn Write) -> Result<()>;

    /// Runs `cmd` with `input` copied into its standard input (imports).
    fn run_from(&self, cmd: &Cmd, input: &mut dyn Read) -> Result<()>;
}

/// Runs the real tools.
#[derive(Debug, Default)]
pub struct SystemRunner;

fn failed(cmd: &Cmd, message: impl Into<String>) -> StorageError {
    StorageError::Command {
        command: cmd.to_string(),
        message: message.into(),
    }
}

fn exit_error(cmd: &Cmd, status: std::process::ExitStatus, stderr: &[u8]) -> StorageError {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        failed(cmd, format!("exit status {}", status.code().unwrap_or(-1)))
    } else {
        failed(cmd, text.to_string())
    }
}

impl SystemRunner {
    fn command(cmd: &Cmd) -> Command {
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args).env("LC_ALL", "C");
        c
    }
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<String> {
        let out = Self::command(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(cmd, e.to_string()))?;
        if !out.status.success() {
            return Err(exit_error(cmd, out.status, &out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run_to(&self, cmd: &Cmd, out: &mut dyn Write) -> Result<()> {
        let mut child = Self::command(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(cmd, e.to_string()))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed(cmd, "no stdout"))?;
        let stderr = drain(child.stderr.take());
        let copied = std::io::copy(&mut stdout, out);
        // The program may still write (or block on a full pipe) when the
        // copy stopped early: it cannot be waited for with stdout open.
        drop(stdout);
        let status = child.wait().map_err(|e| failed(cmd, e.to_string()))?;
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(exit_error(cmd, status, &stderr));
        }
        copied.map_err(|e| failed(cmd, format!("copying output: {e}")))?;
        Ok(())
    }

    fn run_from(&self, cmd: &Cmd, input: &mut dyn Read) -> Result<()> {
        let mut child = Self::command(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(cmd, e.to_string()))?;
        let mut stdin = child.stdin.take().ok_or_else(|| failed(cmd, "no stdin"))?;
        let stderr = drain(child.stderr.take());
        let copied = std::io::copy(input, &mut stdin);
        drop(stdin);
        let status = child.wait().map_err(|e| failed(cmd, e.to_string()))?;
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(exit_error(cmd, status, &stderr));
        }
        copied.map_err(|e| failed(cmd, format!("copying input: {e}")))?;
        Ok(())
    }
}

/// Reads a child's stderr on a thread of its own while its stdin or
/// stdout is streamed: a program that writes many warnings must not block
/// on a full stderr pipe (and with it the stream). Keeps the last 64 KiB.
fn drain(stderr: Option<std::process::ChildStderr>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        const KEEP: usize = 64 * 1024;
        let mut kept = Vec::new();
        let Some(mut stderr) = stderr else {
            return kept;
        };
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * KEEP {
                kept.drain(..kept.len() - KEEP);
            }
        }
        kept
    })
}

/// Records commands instead of running them; answers each with the first
/// scripted reply whose program and leading arguments match, else empty
/// output. For golden tests of what a plugin runs.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    log: Mutex<Vec<String>>,
    replies: Vec<(String, Result<String, String>)>,
}

impl RecordingRunner {
    pub fn new() -> RecordingRunner {
        RecordingRunner::default()
    }

    /// When a command line starts with `prefix`, answer `stdout`.
    pub fn reply(mut self, prefix: &str, stdout: &str) -> RecordingRunner {
        self.replies.push((prefix.into(), Ok(stdout.into())));
        self
    }

    /// When a command line starts with `prefix`, fail with `stderr`.
    pub fn fail(mut self, prefix: &str, stderr: &str) -> RecordingRunner {
        self.replies.push((prefix.into(), Err(stderr.into())));
        self
    }

    /// The command lines run so far, one per entry.
    pub fn commands(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn answer(&self, cmd: &Cmd) -> Result<String> {
        let line = cmd.to_string();
        if let Ok(mut log) = self.log.lock() {
            log.push(line.clone());
        }
        match self
            .replies
            .iter()
            .find(|(p, _)| line.starts_with(p.as_str()))
        {
            Some((_, Ok(out))) => Ok(out.clone()),
            Some((_, Err(e))) => Err(failed(cmd, e.clone())),
            None => Ok(String::new()),
        }
    }
}

impl Runner for RecordingRunner {
    fn run(&self, cmd: &Cmd) -> Result<String> {
        self.answer(cmd)
    }

    fn run_to(&self, cmd: &Cmd, out: &mut dyn Write) -> Result<()> {
        let data = self.answer(cmd)?;
        out.write_all(data.as_bytes())
            .map_err(|e| failed(cmd, e.to_string()))
    }

    fn run_from(&self, cmd: &Cmd, input: &mut dyn Read) -> Result<()> {
        self.answer(cmd)?;
        std::io::copy(input, &mut std::io::sink()).map_err(|e| failed(cmd, e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes `left` bytes, then fails as a closed pipe.
    struct Closing {
        left: usize,
    }

    impl Write for Closing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn sh(script: &str) -> Cmd {
        Cmd::new("sh").args(["-c", script])
    }

    #[test]
    fn streams_survive_chatty_programs() {
        // 1 MiB of warnings before any output: more than a pipe holds.
        let chatty = "head -c 1048576 /dev/zero | tr '\\0' w >&2; echo done";
        let mut out = Vec::new();
        SystemRunner.run_to(&sh(chatty), &mut out).unwrap();
        assert_eq!(out, b"done\n");
        let mut input: &[u8] = b"some input";
        SystemRunner
            .run_from(
                &sh(&format!("cat >/dev/null; {chatty} >/dev/null")),
                &mut input,
            )
            .unwrap();
    }

    #[test]
    fn a_reader_that_gives_up_ends_the_program() {
        // The program has far more to say than the writer takes: it gets
        // SIGPIPE and the call returns (it used to wait for it forever).
        let err = SystemRunner
            .run_to(
                &sh("head -c 10485760 /dev/zero"),
                &mut Closing { left: 4096 },
            )
            .unwrap_err();
        assert!(err.to_string().contains("head -c"), "{err}");
    }
}
