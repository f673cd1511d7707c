//! One kept-alive HTTPS connection to the daemon, as a GUI or proxmoxer
//! session holds one. The container benchmarks poll tasks every few
//! milliseconds: a curl process and a TLS handshake per request would cost
//! more than the daemon's work they time.

use crate::api::Ticket;
use crate::error::{BenchError, Result};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// How long one answer may take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

type Stream = BufReader<StreamOwned<ClientConnection, TcpStream>>;

/// An authenticated client of the daemon's API on 127.0.0.1.
pub struct Client {
    port: u16,
    config: Arc<ClientConfig>,
    cookie: String,
    csrf: String,
    stream: Option<Stream>,
}

/// An answer: its HTTP status and JSON body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status code.
    pub code: u16,
    /// The body (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl Client {
    /// A client of the daemon on `port` with `ticket`; connects on first use.
    pub fn new(port: u16, ticket: &Ticket) -> Result<Client> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Client {
            port,
            config: Arc::new(config),
            cookie: ticket.cookie_header(),
            csrf: ticket.csrf_header(),
            stream: None,
        })
    }

    /// Opens the connection now (so that a timed call does not pay the
    /// handshake).
    pub fn connect(&mut self) -> Result<()> {
        if self.stream.is_none() {
            self.stream = Some(self.open()?);
        }
        Ok(())
    }

    /// Calls `method path` (below `/api2/json`, segments encoded) with a
    /// form and returns the answer's `data`; anything but 200 is an error.
    pub fn call(&mut self, method: &str, path: &str, form: &[(&str, &str)]) -> Result<Value> {
        let answer = self.request(method, path, form)?;
        if answer.code != 200 {
            return Err(BenchError::Tool {
                tool: format!("{method} {path}"),
                detail: format!("HTTP {}: {}", answer.code, answer.body),
            });
        }
        Ok(answer.body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Polls task `upid` of the node at `node_path` (`/nodes/<node>`,
    /// encoded) every `every` until it has stopped; fails unless it ended
    /// OK, or when it runs longer than `timeout`.
    pub fn wait_task(
        &mut self,
        node_path: &str,
        upid: &str,
        every: Duration,
        timeout: Duration,
    ) -> Result<()> {
        let path = format!(
            "{node_path}/tasks/{}/status",
            utf8_percent_encode(upid, NON_ALPHANUMERIC)
        );
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.call("GET", &path, &[])?;
            if status["status"] == "stopped" {
                return match status["exitstatus"].as_str() {
                    Some("OK") => Ok(()),
                    other => Err(BenchError::Tool {
                        tool: format!("task {upid}"),
                        detail: format!("ended with {}", other.unwrap_or("no exit status")),
                    }),
                };
            }
            if Instant::now() > deadline {
                return Err(BenchError::Tool {
                    tool: format!("task {upid}"),
                    detail: format!("still running after {} s", timeout.as_secs()),
                });
            }
            std::thread::sleep(every);
        }
    }

    /// Calls `method path` and returns whatever the daemon answered.
    pub fn request(&mut self, method: &str, path: &str, form: &[(&str, &str)]) -> Result<Answer> {
        let body = encode_form(form);
        let head = format!(
            "{method} /api2/json{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie}\r\n{csrf}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n\r\n",
            port = self.port,
            cookie = self.cookie,
            csrf = self.csrf,
            len = body.len(),
        );
        let request = [head.as_bytes(), body.as_bytes()].concat();
        let reused = self.stream.is_some();
        match self.exchange(&request) {
            // A kept-alive connection the daemon closed in the meantime
            // fails before any answer: the request never arrived, so it is
            // safe to send again on a fresh one.
            Err(Exchange::Stale(_)) if reused => {
                self.stream = None;
                self.exchange(&request).map_err(Exchange::into_error)
            }
            other => other.map_err(Exchange::into_error),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> Result<Answer, Exchange> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.open().map_err(Exchange::Failed)?,
        };
        let net = |e: std::io::Error| self.net_error(&e.to_string());
        let sent = stream
            .get_mut()
            .write_all(request)
            .and_then(|()| stream.get_mut().flush());
        if let Err(e) = sent {
            return Err(Exchange::Stale(net(e)));
        }
        let mut status = String::new();
        match stream.read_line(&mut status) {
            Ok(0) => {
                return Err(Exchange::Stale(net(
                    std::io::ErrorKind::UnexpectedEof.into()
                )))
            }
            Ok(_) => {}
            // Closed or reset before it answered; a timeout is not stale:
            // the daemon may still be working on the request.
            Err(e) if is_closed(&e) => return Err(Exchange::Stale(net(e))),
            Err(e) => return Err(Exchange::Failed(net(e))),
        }
        let (answer, keep) =
            read_answer(&mut stream, &status).map_err(|e| Exchange::Failed(net(e)))?;
        if keep {
            self.stream = Some(stream);
        }
        Ok(answer)
    }

    /// A new connection, TLS handshake done.
    fn open(&self) -> Result<Stream> {
        let err = |e: &dyn std::fmt::Display| self.net_error(&e.to_string());
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| err(&e))?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(|e| err(&e))?;
        let name = ServerName::try_from("localhost").map_err(|e| err(&e))?;
        let mut conn = ClientConnection::new(self.config.clone(), name).map_err(tls_error)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| err(&e))?;
        }
        Ok(BufReader::new(StreamOwned::new(conn, tcp)))
    }

    fn net_error(&self, detail: &str) -> BenchError {
        BenchError::Tool {
            tool: format!("HTTPS to 127.0.0.1:{}", self.port),
            detail: detail.to_string(),
        }
    }
}

/// Runs `op` for every id on a thread of its own with a client of its own
/// (made by `connect` and connected before the clock starts); returns the
/// wall time from the common start to the last end, and each outcome.
pub fn fan_out(
    ids: &[u32],
    connect: impl Fn() -> Result<Client> + Sync,
    op: impl Fn(&mut Client, u32) -> Result<()> + Sync,
) -> (f64, Vec<Result<(), String>>) {
    let barrier = Barrier::new(ids.len() + 1);
    let (barrier, connect, op) = (&barrier, &connect, &op);
    std::thread::scope(|scope| {
        let handles: Vec<_> = ids
            .iter()
            .map(|&vmid| {
                scope.spawn(move || {
                    let client = connect().and_then(|mut c| c.connect().map(|()| c));
                    barrier.wait();
                    let mut client = client.map_err(|e| e.to_string())?;
                    op(&mut client, vmid).map_err(|e| e.to_string())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the caller's thread panicked".into()))
            })
            .collect();
        (super::elapsed_ms(start), results)
    })
}

/// Whether `e` says the peer closed or reset the connection.
fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
    )
}

/// How an exchange failed: before any answer (`Stale`) or later.
enum Exchange {
    Stale(BenchError),
    Failed(BenchError),
}

impl Exchange {
    fn into_error(self) -> BenchError {
        match self {
            Exchange::Stale(e) | Exchange::Failed(e) => e,
        }
    }
}

/// Reads the rest of an answer after its status line; also says whether
/// the connection stays open.
fn read_answer(stream: &mut impl BufRead, status: &str) -> std::io::Result<(Answer, bool)> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("bad status line '{}'", status.trim())))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep = true;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the headers".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(stream)?
    } else if let Some(n) = length {
        let mut body = vec![0; n];
        stream.read_exact(&mut body)?;
        body
    } else {
        keep = false;
        let mut body = Vec::new();
        stream.read_to_end(&mut body)?;
        body
    };
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok((Answer { code, body }, keep))
}

/// A chunked body (RFC 9112 §7.1), trailers skipped.
fn read_chunked(stream: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if stream.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        stream.read_exact(&mut crlf)?;
    }
}

/// `a=1&b=x%2Cy`.
fn encode_form(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn tls_error(e: rustls::Error) -> BenchError {
    BenchError::Tool {
        tool: "TLS to the daemon".into(),
        detail: e.to_string(),
    }
}

/// Accepts the daemon's self-signed certificate (made on its first start),
/// as `curl -k` does in the other benchmarks; handshake signatures are
/// still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> std::io::Result<(Answer, bool)> {
        let mut reader = std::io::Cursor::new(text.as_bytes().to_vec());
        let mut status = String::new();
        reader.read_line(&mut status)?;
        read_answer(&mut reader, &status)
    }

    #[test]
    fn reads_a_sized_answer_and_keeps_the_connection() {
        let (a, keep) = answer(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"data\":\"x\"}\nrest",
        )
        .expect("answer");
        assert_eq!(a.code, 200);
        assert_eq!(a.body["data"], "x");
        assert!(keep);
    }

    #[test]
    fn reads_a_chunked_answer_and_a_close() {
        let (a, keep) = answer(
            "HTTP/1.1 501 Not Implemented\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             5\r\n{\"a\":\r\n3;x=y\r\n 1}\r\n0\r\n\r\n",
        )
        .expect("answer");
        assert_eq!(a.code, 501);
        assert_eq!(a.body["a"], 1);
        assert!(!keep);
    }

    #[test]
    fn keeps_a_body_that_is_not_json_as_text() {
        let (a, _) = answer("HTTP/1.1 500 x\r\nContent-Length: 4\r\n\r\noops").expect("answer");
        assert_eq!(a.body, Value::String("oops".into()));
        assert!(answer("garbage\r\n\r\n").is_err());
        assert!(answer("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    }

    #[test]
    fn encodes_forms() {
        assert_eq!(
            encode_form(&[("net0", "name=eth0,ip=dhcp"), ("vmid", "100")]),
            "net0=name%3Deth0%2Cip%3Ddhcp&vmid=100"
        );
        assert_eq!(encode_form(&[]), "");
    }
}
