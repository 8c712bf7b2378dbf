//! The device's access token.

use std::fmt;

use reqwest::header::{HeaderValue, InvalidHeaderValue};
use zeroize::Zeroizing;

/// A device's access token (`cdt_…`), as login hands it out.
///
/// It is a secret: `Debug` prints `[redacted]`, there is no `Display`, and its memory is
/// zeroed when dropped. [`expose_secret`](Self::expose_secret) is the one way to read it
/// (to keep it in the app's key store).
#[derive(Clone)]
pub struct AccessToken(Zeroizing<String>);

impl AccessToken {
    /// Wraps a token, e.g. one read back from the app's key store.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token itself. Keep it out of logs.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// `Bearer <token>`, marked sensitive so HTTP libraries leave it out of their logs.
    pub(crate) fn authorization_header(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        let text = Zeroizing::new(format!("Bearer {}", self.expose_secret()));
        let mut value = HeaderValue::from_str(&text)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl From<String> for AccessToken {
    fn from(token: String) -> Self {
        Self::new(token)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token_and_the_header_is_sensitive() {
        let token = AccessToken::new("cdt_very-secret-value");
        assert!(!format!("{token:?}").contains("very-secret"));
        let header = token.authorization_header().unwrap();
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains("very-secret"));
        assert_eq!(token.expose_secret(), "cdt_very-secret-value");
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        assert!(AccessToken::new("cdt_a\nb").authorization_header().is_err());
    }
}
