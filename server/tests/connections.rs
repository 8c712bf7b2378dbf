//! Connections as hostile or unlucky clients hold them, over raw TCP: silent and slow
//! clients are cut off by the timeouts, malformed heads are answered in the one error
//! shape, a refused request whose body was not read says `Connection: close` (and its
//! answer arrives whole), connections that never authenticate are capped, and keep-alive
//! and pipelining still work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::TestServer;
use courier_server::{MIGRATOR, Settings};
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for anything the server should do (a bound, not a timing assertion).
const BOUND: Duration = Duration::from_secs(10);

fn quick() -> Settings {
    Settings {
        header_timeout: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..Settings::default()
    }
}

async fn open(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// An answer as a raw client reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the one error shape with `code`, and the status.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

/// Reads one answer (head and `Content-Length` body) from `stream`, keeping what follows
/// in `rest`; `None` if the connection ends first.
async fn read_answer(stream: &mut (impl AsyncRead + Unpin), rest: &mut Vec<u8>) -> Option<Answer> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = response.parse(rest) {
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let status = response.code.unwrap();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            while rest.len() < len + length {
                let mut buf = [0u8; 4096];
                let n = tokio::time::timeout(BOUND, stream.read(&mut buf))
                    .await
                    .expect("the answer's body within the bound")
                    .unwrap_or(0);
                assert!(n > 0, "the connection ended inside an answer");
                rest.extend_from_slice(&buf[..n]);
            }
            let body = rest[len..len + length].to_vec();
            rest.drain(..len + length);
            return Some(Answer {
                status,
                headers,
                body,
            });
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("an answer or the end within the bound")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        rest.extend_from_slice(&buf[..n]);
    }
}

/// Whether the server closes the connection (reads end) within the bound; what it sent
/// before is discarded.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn request(stream: &mut TcpStream, text: &str) -> Option<Answer> {
    stream.write_all(text.as_bytes()).await.unwrap();
    read_answer(stream, &mut Vec::new()).await
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn silent_slow_and_idle_clients_are_cut_off(pool: PgPool) {
    let server = TestServer::start_with(pool, quick()).await;

    // Nothing sent at all: closed, without an answer.
    let mut silent = open(&server).await;
    let mut rest = Vec::new();
    assert!(read_answer(&mut silent, &mut rest).await.is_none());
    assert!(rest.is_empty());

    // Headers trickling in: 408 in the error shape, then closed.
    let mut slow = open(&server).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let answer = read_answer(&mut slow, &mut Vec::new()).await.unwrap();
    answer.assert_error(408, "request_timeout");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed_by_server(&mut slow).await);

    // A body that does not arrive: 408, closed.
    let mut slow_body = open(&server).await;
    slow_body
        .write_all(b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user")
        .await
        .unwrap();
    let answer = read_answer(&mut slow_body, &mut Vec::new()).await.unwrap();
    answer.assert_error(408, "request_timeout");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed_by_server(&mut slow_body).await);

    // Keep-alive works, and an idle kept-alive connection is closed.
    let mut idle = open(&server).await;
    for _ in 0..2 {
        let answer = request(&mut idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert!(closed_by_server(&mut idle).await);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn errors_before_routing_answer_in_the_error_shape(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let many_headers: String = (0..101).map(|i| format!("X-{i}: y\r\n")).collect();
    let huge_header = format!("X-Big: {}\r\n", "a".repeat(20_000));
    for (head, status, code) in [
        ("GARBAGE\r\n\r\n".to_owned(), 400, "invalid_http_request"),
        (
            "GET / HTTP/9.9\r\n\r\n".to_owned(),
            400,
            "invalid_http_request",
        ),
        (
            "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n".to_owned(),
            400,
            "invalid_http_request",
        ),
        (
            "POST /v1/login HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_owned(),
            400,
            "invalid_http_request",
        ),
        (
            "POST /v1/login HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n".to_owned(),
            400,
            "invalid_http_request",
        ),
        (
            "POST /v1/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
                .to_owned(),
            400,
            "invalid_http_request",
        ),
        (
            "POST /v1/login HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
            400,
            "invalid_http_request",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\n{huge_header}\r\n"),
            431,
            "headers_too_large",
        ),
    ] {
        let mut stream = open(&server).await;
        let answer = request(&mut stream, &head)
            .await
            .unwrap_or_else(|| panic!("no answer to {head:.40?}"));
        answer.assert_error(status, code);
        assert_eq!(answer.header("connection"), Some("close"));
        assert!(closed_by_server(&mut stream).await);
    }

    // A good request, then a malformed one on the same connection: the first is served,
    // the second refused in the shape; two requests in one write (pipelined) are both
    // answered, in order.
    let mut stream = open(&server).await;
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
    let mut rest = Vec::new();
    let first = read_answer(&mut stream, &mut rest).await.unwrap();
    let second = read_answer(&mut stream, &mut rest).await.unwrap();
    assert_eq!((first.status, second.status), (200, 200));
    stream.write_all(b"NOT HTTP\r\n\r\n").await.unwrap();
    read_answer(&mut stream, &mut rest)
        .await
        .unwrap()
        .assert_error(400, "invalid_http_request");
    assert!(closed_by_server(&mut stream).await);

    // A chunked body is framed right: the request after it is served on the connection.
    let mut stream = open(&server).await;
    let body = r#"{"username": "chunky", "password": "correct horse battery"}"#;
    let chunked = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        &body[..5],
        body.len() - 5,
        &body[5..]
    );
    stream.write_all(chunked.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let created = read_answer(&mut stream, &mut rest).await.unwrap();
    assert_eq!(
        created.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(
        read_answer(&mut stream, &mut rest).await.unwrap().status,
        200
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_refused_request_whose_body_was_not_read_says_connection_close(pool: PgPool) {
    let server = TestServer::start_with(
        pool,
        Settings {
            max_body_bytes: 64 * 1024,
            ..Settings::default()
        },
    )
    .await;
    let big = "x".repeat(600 * 1024);
    for (head, status, code) in [
        // Refused before the body is read: no token.
        (
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json",
            401,
            "missing_token",
        ),
        // Refused after reading part of it: over the body limit.
        (
            "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json",
            413,
            "payload_too_large",
        ),
        // Not JSON at all.
        (
            "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain",
            415,
            "unsupported_media_type",
        ),
    ] {
        let (mut reader, mut writer) = open(&server).await.into_split();
        let text = format!("{head}\r\nContent-Length: {}\r\n\r\n", big.len());
        writer.write_all(text.as_bytes()).await.unwrap();
        // The client keeps sending its body while the answer comes (as a keep-alive
        // client does); the answer arrives whole, with no reset under it, and says the
        // connection closes.
        let body = big.clone();
        let sender = tokio::spawn(async move {
            // The server may stop reading once it has answered: a failed write is fine.
            let _ = writer.write_all(body.as_bytes()).await;
            writer
        });
        let answer = read_answer(&mut reader, &mut Vec::new())
            .await
            .unwrap_or_else(|| panic!("no answer for {code}"));
        answer.assert_error(status, code);
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
        drop(sender.await.unwrap());
    }

    // A refused request whose body was read whole keeps the connection.
    let mut stream = open(&server).await;
    let small = r#"{"username": 1}"#;
    let text = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{small}",
        small.len()
    );
    let answer = request(&mut stream, &text).await.unwrap();
    answer.assert_error(400, "invalid_request_body");
    assert_eq!(answer.header("connection"), None, "{answer:?}");
    let again = request(&mut stream, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(again.status, 200);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn connections_that_have_not_authenticated_are_capped(pool: PgPool) {
    let server = TestServer::start_with(
        pool,
        Settings {
            max_unauthenticated_connections: 3,
            ..Settings::default()
        },
    )
    .await;
    // One connection registers and logs in over raw HTTP (unauthenticated requests), and
    // two more stay silent: the cap is full, the fourth is turned away in the shape.
    let mut authed = open(&server).await;
    let account = format!(
        r#"{{"username": "alice", "password": "{}"}}"#,
        common::PASSWORD
    );
    let login = format!(
        r#"{{"username": "alice", "password": "{}", "deviceId": 0}}"#,
        common::PASSWORD
    );
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(
        request(&mut authed, &post("/v1/accounts", &account))
            .await
            .unwrap()
            .status,
        201
    );
    let answer = request(&mut authed, &post("/v1/login", &login))
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let token = answer.json()["accessToken"].as_str().unwrap().to_owned();
    let mut silent = vec![open(&server).await, open(&server).await];
    let mut fourth = open(&server).await;
    let answer = read_answer(&mut fourth, &mut Vec::new()).await.unwrap();
    answer.assert_error(503, "too_many_connections");
    assert!(closed_by_server(&mut fourth).await);

    // The first authenticates: it stays open, and no longer counts.
    let answer = request(
        &mut authed,
        &format!("GET /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let mut next = open(&server).await;
    let answer = request(&mut next, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(answer.status, 200);

    // A closed connection frees its place too.
    silent.clear();
    drop(next);
    let mut later = None;
    for _ in 0..50 {
        let mut stream = open(&server).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut stream, &mut Vec::new()).await.unwrap();
        if answer.status == 200 {
            later = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(later.is_some(), "closed connections free their places");
}
