//! A minimal blocking QMP client: greeting, capabilities, one command at a
//! time, events skipped. Both sides of the start benchmark use it for the
//! same last step (asking QEMU whether it runs), so its cost is the same
//! on both sides.

use crate::error::{BenchError, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a socket that is not there yet is tried again.
const RETRY: Duration = Duration::from_millis(1);

/// A QMP session in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: String,
}

impl Qmp {
    /// Connects to the QMP socket at `path` (trying again until `timeout`
    /// while it does not accept yet), reads the greeting and leaves
    /// capabilities negotiation.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let socket = path.display().to_string();
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(RETRY),
                Err(e) => {
                    return Err(BenchError::Tool {
                        tool: format!("QMP {socket}"),
                        detail: format!("cannot connect within {} s: {e}", timeout.as_secs()),
                    })
                }
            }
        };
        let file = BenchError::file(path);
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(BenchError::file(path))?;
        let writer = stream.try_clone().map_err(file)?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            socket,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.error(format!("no greeting but {greeting}")));
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    /// Runs `command` (no arguments) and returns its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<Value> {
        let mut line = json!({ "execute": command }).to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.error(format!("cannot send '{command}': {e}")))?;
        loop {
            let message = self.read_message()?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(self.error(format!("'{command}' failed: {error}")));
            }
            // Anything else is an event: not the answer.
        }
    }

    /// `query-status`'s `status`: `running`, `prelaunch`, `paused`, ...
    pub fn status(&mut self) -> Result<String> {
        let answer = self.execute("query-status")?;
        answer["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.error(format!("query-status answered {answer}")))
    }

    /// Asks QEMU to quit; its closing the connection is the answer too.
    pub fn quit(mut self) {
        let _ = self.execute("quit");
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(self.error("QEMU closed the connection".into())),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| self.error(format!("not JSON ({e}): {}", line.trim()))),
            Err(e) => Err(self.error(format!("no answer: {e}"))),
        }
    }

    fn error(&self, detail: String) -> BenchError {
        BenchError::Tool {
            tool: format!("QMP {}", self.socket),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU: greets, then answers each line from `answers` in turn.
    fn serve(path: &Path, answers: Vec<&'static str>) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(path).expect("bind");
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut writer = stream;
            writer
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .expect("greet");
            let mut got = Vec::new();
            for answer in answers {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read");
                got.push(line.trim().to_string());
                writer.write_all(answer.as_bytes()).expect("answer");
            }
            got
        })
    }

    #[test]
    fn negotiates_skips_events_and_reads_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp");
        let server = serve(
            &path,
            vec![
                "{\"return\": {}}\n",
                "{\"event\": \"RESUME\", \"data\": {}}\n{\"return\": {\"status\": \"running\", \"running\": true}}\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
            ],
        );
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).expect("connect");
        assert_eq!(qmp.status().expect("status"), "running");
        let err = qmp.execute("cont").expect_err("error answer");
        assert!(err.to_string().contains("nope"), "{err}");
        let sent = server.join().expect("server");
        assert_eq!(sent[0], "{\"execute\":\"qmp_capabilities\"}");
        assert_eq!(sent[1], "{\"execute\":\"query-status\"}");
    }

    #[test]
    fn gives_up_on_a_missing_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Qmp::connect(&dir.path().join("none"), Duration::from_millis(20))
            .err()
            .expect("no socket");
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }
}
