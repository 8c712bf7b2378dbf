//! HTTP/1 request framing, without I/O: where a request head ends, whether it is one the
//! server takes, and where its body ends (so the next head is checked too).
//!
//! The connection guard (`super::io`) holds a head's bytes back from hyper until
//! [`parse_head`] has accepted it, so every malformed, oversized or incomplete head is
//! answered in Courier's error shape (hyper would answer an empty 400 or 431), and passes
//! body bytes through while [`BodyScanner`] finds where the body ends. Heads are parsed
//! with `httparse`, the parser hyper uses, with hyper's header count: a head accepted here
//! is one hyper accepts.

/// Most header fields in one request (hyper's own default).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// An accepted request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its length in bytes, the empty line included.
    pub len: usize,
    pub body: BodyFraming,
    /// The request asks to switch protocols (`Connection: upgrade` with `Upgrade`): once
    /// the server agrees, the bytes that follow are not HTTP.
    pub upgrade: bool,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The request line or a header field does not parse.
    #[error("the request line or a header field is malformed")]
    Malformed,
    /// The head is longer than the limit, or has more than [`MAX_HEADERS`] fields.
    #[error("the request head is too large")]
    TooLarge,
    /// `Content-Length` is not one decimal number (or several copies of one).
    #[error("Content-Length is not a number")]
    BadContentLength,
    /// `Transfer-Encoding` is not exactly `chunked`, comes with `Content-Length`, or is
    /// sent by an HTTP/1.0 client (all ways to smuggle a second request past a proxy).
    #[error("Transfer-Encoding is not a lone chunked")]
    BadTransferEncoding,
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete (and within
/// `max_len`), the head once complete and acceptable.
pub fn parse_head(buf: &[u8], max_len: usize) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_len => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > max_len {
        return Err(HeadError::TooLarge);
    }
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut connection_upgrade = false;
    let mut upgrade = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(HeadError::BadContentLength)?;
            if content_length.is_some_and(|seen| seen != value) {
                return Err(HeadError::BadContentLength);
            }
            content_length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only one coding is supported, once: `chunked`.
            let value =
                std::str::from_utf8(header.value).map_err(|_| HeadError::BadTransferEncoding)?;
            if transfer_encoding || !value.trim().eq_ignore_ascii_case("chunked") {
                return Err(HeadError::BadTransferEncoding);
            }
            transfer_encoding = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= header
                .value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if chunked && (content_length.is_some() || request.version == Some(0)) {
        return Err(HeadError::BadTransferEncoding);
    }
    let body = match (chunked, content_length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::Empty,
        (false, Some(length)) => BodyFraming::Length(length),
    };
    Ok(Some(Head {
        len,
        body,
        upgrade: upgrade && connection_upgrade,
    }))
}

/// Whether `buf` (a head being received) may hold its end, or an error to report early:
/// cheap checks that spare parsing a partial head on every read.
pub fn worth_parsing(buf: &[u8], new_from: usize) -> bool {
    // The first line is complete (a malformed request line is refused at once), or an
    // empty line ends the head (a bare LF is a line end to httparse too).
    let from = new_from.saturating_sub(3);
    let first_line_done =
        buf[..new_from].iter().all(|b| *b != b'\n') && buf[new_from..].contains(&b'\n');
    first_line_done
        || buf[from..].windows(2).any(|w| w == b"\n\n")
        || buf[from..].windows(3).any(|w| w == b"\n\r\n")
}

/// Finds the end of a body in the bytes that follow its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyScanner {
    /// So many bytes of a `Content-Length` body remain.
    Length(u64),
    /// Where a chunked body is.
    Chunked(Chunked),
}

/// The place in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// In a chunk-size line: the size so far, how many bytes of the line were seen, and
    /// whether the extensions began.
    Size {
        size: u64,
        line: usize,
        extension: bool,
    },
    /// After a chunk-size line's CR.
    SizeLf { size: u64 },
    /// So many bytes of chunk data remain.
    Data(u64),
    /// The CR (or LF) after chunk data.
    DataCrlf,
    /// The LF after chunk data's CR.
    DataLf,
    /// In the trailer section: bytes seen, and whether the current line is empty so far.
    Trailers { seen: usize, line_empty: bool },
    /// The body ended.
    Done,
}

/// A malformed chunked body (hyper would refuse it too; the connection ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the chunked body is malformed")]
pub struct MalformedChunks;

impl BodyScanner {
    /// The scanner for a body framed as `framing`, or `None` for no body.
    pub fn new(framing: BodyFraming) -> Option<Self> {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => None,
            BodyFraming::Length(length) => Some(BodyScanner::Length(length)),
            BodyFraming::Chunked => Some(BodyScanner::Chunked(Chunked::Size {
                size: 0,
                line: 0,
                extension: false,
            })),
        }
    }

    /// Takes the bytes of `data` that belong to the body: how many, and whether the body
    /// ended with them (what follows is the next request).
    pub fn advance(&mut self, data: &[u8]) -> Result<(usize, bool), MalformedChunks> {
        match self {
            BodyScanner::Length(remaining) => {
                let taken = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                *remaining -= taken as u64;
                Ok((taken, *remaining == 0))
            }
            BodyScanner::Chunked(state) => {
                let mut at = 0;
                while at < data.len() {
                    if let Chunked::Data(remaining) = state {
                        let taken = usize::try_from(*remaining)
                            .map_or(data.len() - at, |r| r.min(data.len() - at));
                        *remaining -= taken as u64;
                        at += taken;
                        if *remaining == 0 {
                            *state = Chunked::DataCrlf;
                        }
                        continue;
                    }
                    let byte = data[at];
                    at += 1;
                    *state = step(*state, byte)?;
                    if *state == Chunked::Done {
                        return Ok((at, true));
                    }
                }
                Ok((at, false))
            }
        }
    }
}

/// One byte of a chunked body's framing (not chunk data).
fn step(state: Chunked, byte: u8) -> Result<Chunked, MalformedChunks> {
    Ok(match state {
        Chunked::Size {
            size,
            line,
            extension,
        } => {
            if line >= MAX_CHUNK_LINE {
                return Err(MalformedChunks);
            }
            match byte {
                b'\r' if line > 0 => Chunked::SizeLf { size },
                b'\n' if line > 0 => after_size(size),
                _ if extension => Chunked::Size {
                    size,
                    line: line + 1,
                    extension,
                },
                b';' | b' ' | b'\t' if line > 0 => Chunked::Size {
                    size,
                    line: line + 1,
                    extension: true,
                },
                _ => {
                    let digit = (byte as char).to_digit(16).ok_or(MalformedChunks)?;
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(digit)))
                        .ok_or(MalformedChunks)?;
                    Chunked::Size {
                        size,
                        line: line + 1,
                        extension,
                    }
                }
            }
        }
        Chunked::SizeLf { size } if byte == b'\n' => after_size(size),
        Chunked::DataCrlf if byte == b'\r' => Chunked::DataLf,
        Chunked::DataCrlf | Chunked::DataLf if byte == b'\n' => Chunked::Size {
            size: 0,
            line: 0,
            extension: false,
        },
        Chunked::Trailers { seen, .. } if seen >= MAX_TRAILERS => return Err(MalformedChunks),
        Chunked::Trailers { seen, line_empty } => match byte {
            b'\n' if line_empty => Chunked::Done,
            b'\n' => Chunked::Trailers {
                seen: seen + 1,
                line_empty: true,
            },
            b'\r' => Chunked::Trailers {
                seen: seen + 1,
                line_empty,
            },
            _ => Chunked::Trailers {
                seen: seen + 1,
                line_empty: false,
            },
        },
        Chunked::SizeLf { .. }
        | Chunked::DataCrlf
        | Chunked::DataLf
        | Chunked::Data(_)
        | Chunked::Done => {
            return Err(MalformedChunks);
        }
    })
}

fn after_size(size: u64) -> Chunked {
    if size == 0 {
        Chunked::Trailers {
            seen: 0,
            line_empty: true,
        }
    } else {
        Chunked::Data(size)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn head(text: &str) -> Result<Option<Head>, HeadError> {
        parse_head(text.as_bytes(), 8192)
    }

    #[test]
    fn heads_are_accepted_with_their_framing() {
        let get = head("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (get.len, get.body, get.upgrade),
            (34, BodyFraming::Empty, false)
        );
        let post = head("POST /v1/login HTTP/1.1\r\nContent-Length: 12\r\n\r\n{")
            .unwrap()
            .unwrap();
        assert_eq!(post.body, BodyFraming::Length(12));
        assert_eq!(post.len, 47);
        let chunked = head("POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(chunked.body, BodyFraming::Chunked);
        let ws = head(
            "GET /v1/ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(ws.upgrade);
        // Repeated identical lengths are one length; a bare LF ends lines too.
        let twice = head("POST /x HTTP/1.1\nContent-Length: 3\nContent-Length: 3\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(twice.body, BodyFraming::Length(3));
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    }

    #[test]
    fn bad_heads_are_refused_with_their_reason() {
        for (text, error) in [
            ("GARBAGE\r\n\r\n", HeadError::Malformed),
            ("GET / HTTP/9.9\r\n\r\n", HeadError::Malformed),
            ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", HeadError::Malformed),
            (
                "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::BadTransferEncoding,
            ),
        ] {
            assert_eq!(head(text), Err(error), "{text:?}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert_eq!(head(&long), Err(HeadError::TooLarge));
        let partial_long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        assert_eq!(head(&partial_long), Err(HeadError::TooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn a_malformed_request_line_is_worth_parsing_as_soon_as_it_ends() {
        let buf = b"GARBAGE\r\n";
        assert!(worth_parsing(buf, 0));
        assert!(!worth_parsing(b"GET / HTTP/1.1\r\nHost:", 16));
        assert!(worth_parsing(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 20));
    }

    fn scan_all(framing: BodyFraming, body: &[u8], split: usize) -> Result<usize, MalformedChunks> {
        let mut scanner = BodyScanner::new(framing).unwrap();
        let mut taken = 0;
        for part in body.chunks(split.max(1)) {
            let (n, done) = scanner.advance(part)?;
            taken += n;
            if done {
                return Ok(taken);
            }
            assert_eq!(n, part.len());
        }
        Ok(usize::MAX)
    }

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_and_trailers_end() {
        let body =
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: y\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - "GET / HTTP/1.1\r\n".len();
        for split in [1, 2, 3, 7, 1000] {
            assert_eq!(
                scan_all(BodyFraming::Chunked, body, split),
                Ok(end),
                "split {split}"
            );
        }
        assert_eq!(scan_all(BodyFraming::Chunked, b"0\r\n\r\nNEXT", 1), Ok(5));
        assert_eq!(scan_all(BodyFraming::Chunked, b"0\n\nNEXT", 1), Ok(3));
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"ffffffffffffffffff\r\n",
        ] {
            assert_eq!(
                scan_all(BodyFraming::Chunked, bad, 1),
                Err(MalformedChunks),
                "{bad:?}"
            );
        }
        assert_eq!(scan_all(BodyFraming::Length(4), b"abcdNEXT", 3), Ok(4));
    }

    proptest! {
        /// Any body cut into chunks, then split into reads anywhere, is found to end
        /// exactly where it ends.
        #[test]
        fn chunked_encoding_of_any_body_is_scanned_to_its_end(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..8),
            split in 1usize..64,
        ) {
            let mut body = Vec::new();
            for part in &parts {
                body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                body.extend_from_slice(part);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let end = body.len();
            body.extend_from_slice(b"POST /next HTTP/1.1\r\n");
            prop_assert_eq!(scan_all(BodyFraming::Chunked, &body, split), Ok(end));
        }

        /// Whatever bytes arrive, parsing a head never panics, and a head it accepts is
        /// no longer than what it was given.
        #[test]
        fn parse_head_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some(head)) = parse_head(&bytes, 8192) {
                prop_assert!(head.len <= bytes.len());
            }
        }
    }
}
