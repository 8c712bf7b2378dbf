//! The protocol's fixed limits. Server-configurable limits (device limit, body size) are
//! in the server's configuration; these are the ones both sides must agree on.

/// Usernames are 3 to 32 characters long.
pub const USERNAME_MIN_CHARS: usize = 3;
/// Usernames are 3 to 32 characters long.
pub const USERNAME_MAX_CHARS: usize = 32;
/// Passwords are at least 8 characters long.
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Passwords are at most 256 bytes long (bounds the cost of hashing them).
pub const PASSWORD_MAX_BYTES: usize = 256;
/// A device name is at most 64 characters long.
pub const DEVICE_NAME_MAX_CHARS: usize = 64;
/// A one-time or fallback key ID is 1 to 64 characters from `[A-Za-z0-9_+/=-]`.
pub const KEY_ID_MAX_CHARS: usize = 64;
/// One upload carries at most this many one-time keys.
pub const MAX_ONE_TIME_KEYS_PER_UPLOAD: usize = 100;
/// A device holds at most this many unclaimed one-time keys on the server.
pub const MAX_STORED_ONE_TIME_KEYS: usize = 500;
/// One claim names at most this many devices.
pub const MAX_DEVICES_PER_CLAIM: usize = 1000;
/// A channel has at most this many members (the creator included).
pub const MAX_CHANNEL_MEMBERS: usize = 256;
/// A Megolm session ID is at most this many characters (vodozemac's are 43).
pub const SESSION_ID_MAX_CHARS: usize = 64;
/// An inbox page (`GET /v1/inbox?limit=`) holds at most this many items.
pub const MAX_INBOX_PAGE_ITEMS: u32 = 1000;
/// An inbox page holds this many items when the request names no `limit`.
pub const DEFAULT_INBOX_PAGE_ITEMS: u32 = 100;

/// Checks a username against the documented rules and returns its canonical form.
///
/// Usernames are case-insensitive: the canonical form is lowercase. After lowercasing, a
/// username is 3 to 32 characters of `a-z`, `0-9`, `.`, `_` and `-`, and starts with a
/// letter.
pub fn canonical_username(username: &str) -> Result<String, UsernameError> {
    let lower = username.to_ascii_lowercase();
    let len = lower.chars().count();
    if !(USERNAME_MIN_CHARS..=USERNAME_MAX_CHARS).contains(&len) {
        return Err(UsernameError::Length);
    }
    if !lower.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(UsernameError::FirstCharacter);
    }
    if !lower
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err(UsernameError::Characters);
    }
    Ok(lower)
}

/// Why a username breaks the rules of [`canonical_username`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// The username is shorter than 3 or longer than 32 characters.
    #[error("a username is 3 to 32 characters long")]
    Length,
    /// The username does not start with a letter.
    #[error("a username starts with a letter")]
    FirstCharacter,
    /// The username has a character other than letters, digits, `.`, `_` and `-`.
    #[error("a username has only letters, digits, '.', '_' and '-'")]
    Characters,
}

/// Checks a password's length (the only rule: 8 characters to 256 bytes).
pub fn check_password(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// Why a password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Fewer than 8 characters.
    #[error("a password has at least 8 characters")]
    TooShort,
    /// More than 256 bytes.
    #[error("a password has at most 256 bytes")]
    TooLong,
}

/// Checks a one-time or fallback key ID.
pub fn check_key_id(key_id: &str) -> bool {
    !key_id.is_empty()
        && key_id.len() <= KEY_ID_MAX_CHARS
        && key_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '/' | '=' | '-'))
}

/// A client message ID is 1 to 64 characters from `[A-Za-z0-9_-]` (a UUID fits).
pub const CLIENT_MESSAGE_ID_MAX_CHARS: usize = 64;

/// Checks a client message ID.
pub fn check_client_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= CLIENT_MESSAGE_ID_MAX_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Checks a device name: 1 to 64 characters, no control characters.
pub fn check_device_name(name: &str) -> bool {
    let len = name.chars().count();
    (1..=DEVICE_NAME_MAX_CHARS).contains(&len) && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(canonical_username("Alice_01").unwrap(), "alice_01");
        assert_eq!(canonical_username("ab"), Err(UsernameError::Length));
        assert_eq!(
            canonical_username(&"a".repeat(33)),
            Err(UsernameError::Length)
        );
        assert_eq!(
            canonical_username("1alice"),
            Err(UsernameError::FirstCharacter)
        );
        assert_eq!(canonical_username("ali ce"), Err(UsernameError::Characters));
        assert_eq!(canonical_username("alíce"), Err(UsernameError::Characters));
    }

    #[test]
    fn passwords_have_bounded_length() {
        assert_eq!(check_password("short"), Err(PasswordError::TooShort));
        assert!(check_password("long enough").is_ok());
        assert_eq!(
            check_password(&"x".repeat(257)),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn key_ids_and_device_names_are_checked() {
        assert!(check_key_id("AAAAAQ"));
        assert!(!check_key_id(""));
        assert!(!check_key_id("has space"));
        assert!(!check_key_id(&"a".repeat(65)));
        assert!(check_device_name("Alice's phone"));
        assert!(!check_device_name(""));
        assert!(!check_device_name("tab\there"));
    }
}
