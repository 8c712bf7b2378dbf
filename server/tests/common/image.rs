//! How the container image starts the server, read from the repository's Dockerfile (its
//! runtime stage's `ENV`, `USER`, `ENTRYPOINT` and `CMD`), so a test can start the binary
//! the same way without a container engine.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// The runtime stage's start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStart {
    /// `ENV` pairs, in order.
    pub env: Vec<(String, String)>,
    /// `USER`'s numeric user and group.
    pub uid: u32,
    pub gid: u32,
    /// `ENTRYPOINT` then `CMD` (exec form).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `EXPOSE`d ports.
    pub exposed: Vec<u16>,
}

impl ImageStart {
    /// Reads the Dockerfile at the repository's root.
    pub fn from_repository() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        Self::parse(&text)
    }

    /// The value the image gives `name`.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Parses the last stage of a Dockerfile.
    pub fn parse(text: &str) -> Self {
        let mut start = Self {
            env: Vec::new(),
            uid: 0,
            gid: 0,
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            exposed: Vec::new(),
        };
        for instruction in instructions(text) {
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .unwrap_or((instruction.as_str(), ""));
            let rest = rest.trim();
            match keyword.to_ascii_uppercase().as_str() {
                // A new stage: only the last one is the image.
                "FROM" => {
                    start = Self {
                        env: Vec::new(),
                        uid: 0,
                        gid: 0,
                        entrypoint: Vec::new(),
                        cmd: Vec::new(),
                        exposed: Vec::new(),
                    };
                }
                "ENV" => start.env.extend(env_pairs(rest)),
                "USER" => {
                    let (user, group) = rest.split_once(':').unwrap_or((rest, rest));
                    start.uid = user.parse().expect("USER is numeric (uid:gid)");
                    start.gid = group.parse().expect("USER's group is numeric");
                }
                "ENTRYPOINT" => start.entrypoint = serde_json::from_str(rest).unwrap(),
                "CMD" => start.cmd = serde_json::from_str(rest).unwrap(),
                "EXPOSE" => start.exposed.extend(
                    rest.split_whitespace()
                        .map(|port| port.trim_end_matches("/tcp").parse::<u16>().unwrap()),
                ),
                _ => {}
            }
        }
        start
    }
}

/// Instructions with their continuation lines joined and comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// `KEY="value" KEY2=value2` (or the old `KEY value` form).
fn env_pairs(text: &str) -> Vec<(String, String)> {
    if !text.contains('=') {
        let (key, value) = text.split_once(char::is_whitespace).unwrap();
        return vec![(key.to_owned(), value.trim().to_owned())];
    }
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                value.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
    pairs
}

#[test]
fn the_parser_reads_the_last_stage() {
    let start = ImageStart::parse(
        "FROM rust AS build\nENV A=1\nFROM debian\n# comment\nENV B=\"[::]:8080\" \\\n    C=\"x y\"\nUSER 10001:10002\nEXPOSE 8080 9091\nENTRYPOINT [\"courier-server\"]\nCMD [\"serve\"]\n",
    );
    assert_eq!(start.env("A"), None);
    assert_eq!(start.env("B"), Some("[::]:8080"));
    assert_eq!(start.env("C"), Some("x y"));
    assert_eq!((start.uid, start.gid), (10001, 10002));
    assert_eq!(start.exposed, vec![8080, 9091]);
    assert_eq!(start.entrypoint, vec!["courier-server"]);
    assert_eq!(start.cmd, vec!["serve"]);
}
