//! `courier-server admin ...`: the admin API from the command line (on Fly.io:
//! `fly ssh console -C "courier-server admin stats"`). It prints the API's JSON answer.

use std::fmt;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::api::IssueRegistrationToken;
use crate::config::AdminToken;

/// `courier-server admin`: what to ask the admin API.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin API's base URL. Default: the private listener of a server on this
    /// machine (COURIER_ADMIN_LISTEN), e.g. http://127.0.0.1:9091.
    #[arg(long, env = "COURIER_ADMIN_URL")]
    pub url: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// An admin action.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Users: list, find, deactivate.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Remove one device of a user (its token stops working, its socket closes).
    RemoveDevice {
        /// The user's ID or username.
        user: String,
        /// The device's ID.
        device_id: u32,
    },
    /// Registration tokens: issue, list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The server's numbers: users, devices, undelivered backlog, V1/V2 usage.
    Stats,
}

/// `courier-server admin users ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum UsersCommand {
    /// Users by username, a page at a time.
    List {
        /// Usernames starting with this.
        #[arg(long)]
        search: Option<String>,
        /// The previous page's `nextAfter`.
        #[arg(long)]
        after: Option<String>,
        /// Users per page (1 to 500).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One user (by ID or username) and its devices.
    Show {
        /// The user's ID or username.
        user: String,
    },
    /// Deactivate a user: every device removed (tokens revoked, sockets closed, keys
    /// deleted, pending envelopes dropped), the username kept reserved.
    Deactivate {
        /// The user's ID or username.
        user: String,
    },
}

/// `courier-server admin tokens ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokensCommand {
    /// Issue a registration token (printed once).
    Issue {
        /// Accounts it may create (default: any number).
        #[arg(long)]
        uses: Option<u32>,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Every registration token (without the tokens themselves).
    List,
    /// Revoke a registration token.
    Revoke {
        /// The token's ID (`tokenId`).
        token_id: uuid::Uuid,
    },
}

/// Why an admin command failed, for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminCliError {
    /// No admin token to send.
    #[error(
        "no admin token: set COURIER_ADMIN_TOKEN (on Fly.io it is a secret the machines have) or pass --admin-token before `admin`"
    )]
    NoToken,
    /// No URL and no private listener to default to.
    #[error("no admin API address: COURIER_ADMIN_LISTEN is off; pass --url")]
    NoAddress,
    /// A user-supplied part of the URL does not fit in one.
    #[error("{0}")]
    InvalidArgument(String),
    /// The API could not be reached.
    #[error(
        "cannot reach the admin API at {url}: {reason} (is `courier-server serve` running with its private listener there?)"
    )]
    Unreachable {
        /// Where it was asked.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The API answered with an error.
    #[error("the admin API refused (HTTP {status} {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// The explanation.
        message: String,
    },
}

/// Runs one admin command against `base` and returns the API's answer (JSON, or `null`
/// for an answer without a body).
pub async fn run(
    args: &AdminArgs,
    default_base: Option<String>,
    token: Option<&AdminToken>,
) -> Result<serde_json::Value, AdminCliError> {
    let token = token.ok_or(AdminCliError::NoToken)?;
    let base = args
        .url
        .clone()
        .or(default_base)
        .ok_or(AdminCliError::NoAddress)?;
    let base = base.trim_end_matches('/').to_owned();
    let (method, path, body) = request(&args.command)?;
    let url = format!("{base}{path}");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|error| unreachable(&url, &error))?;
    let mut request = client.request(method, &url).bearer_auth(token.expose());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|error| unreachable(&url, &error))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|error| unreachable(&url, &error))?;
    let json: serde_json::Value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    if status.is_success() {
        return Ok(json);
    }
    let field = |name: &str| {
        json.pointer(&format!("/error/{name}"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown")
            .to_owned()
    };
    Err(AdminCliError::Refused {
        status: status.as_u16(),
        code: field("code"),
        message: field("message"),
    })
}

fn unreachable(url: &str, error: &impl fmt::Display) -> AdminCliError {
    AdminCliError::Unreachable {
        url: url.to_owned(),
        reason: error.to_string(),
    }
}

/// The method, path and body an admin command sends.
fn request(
    command: &AdminCommand,
) -> Result<(Method, String, Option<serde_json::Value>), AdminCliError> {
    let segment = |value: &str| -> Result<String, AdminCliError> {
        // Users are named by ID or username: neither has characters a path must escape.
        if value.is_empty()
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(AdminCliError::InvalidArgument(format!(
                "{value:?} is not a user ID or a username"
            )));
        }
        Ok(value.to_owned())
    };
    Ok(match command {
        AdminCommand::Users(UsersCommand::List {
            search,
            after,
            limit,
        }) => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if let Some(search) = search {
                query.append_pair("search", search);
            }
            if let Some(after) = after {
                query.append_pair("after", after);
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
            let query = query.finish();
            let path = if query.is_empty() {
                "/admin/v1/users".to_owned()
            } else {
                format!("/admin/v1/users?{query}")
            };
            (Method::GET, path, None)
        }
        AdminCommand::Users(UsersCommand::Show { user }) => (
            Method::GET,
            format!("/admin/v1/users/{}", segment(user)?),
            None,
        ),
        AdminCommand::Users(UsersCommand::Deactivate { user }) => (
            Method::POST,
            format!("/admin/v1/users/{}/deactivate", segment(user)?),
            None,
        ),
        AdminCommand::RemoveDevice { user, device_id } => (
            Method::DELETE,
            format!("/admin/v1/users/{}/devices/{device_id}", segment(user)?),
            None,
        ),
        AdminCommand::Tokens(TokensCommand::Issue {
            uses,
            expires_in_days,
        }) => {
            let body = IssueRegistrationToken {
                uses_allowed: *uses,
                expires_in_secs: expires_in_days.map(|days| u64::from(days) * 24 * 3600),
            };
            (
                Method::POST,
                "/admin/v1/registration-tokens".to_owned(),
                Some(serde_json::to_value(body).unwrap_or_default()),
            )
        }
        AdminCommand::Tokens(TokensCommand::List) => (
            Method::GET,
            "/admin/v1/registration-tokens".to_owned(),
            None,
        ),
        AdminCommand::Tokens(TokensCommand::Revoke { token_id }) => (
            Method::DELETE,
            format!("/admin/v1/registration-tokens/{token_id}"),
            None,
        ),
        AdminCommand::Stats => (Method::GET, "/admin/v1/stats".to_owned(), None),
    })
}
