//! Password hashing (Argon2id) on a small dedicated thread pool.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng as PasswordRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// Argon2id password hashing on a small dedicated thread pool: each hash holds 19 MiB,
/// so a burst of logins must neither block the async runtime nor spread that memory over
/// many threads (glibc keeps an arena per thread, and arenas do not shrink).
#[derive(Debug, Clone)]
pub struct Passwords {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
    /// A hash to verify against when the username does not exist, so that a login for an
    /// unknown user takes as long as one with a wrong password (no username probing).
    dummy_hash: Arc<OnceCell<String>>,
}

impl Passwords {
    /// Starts `threads` hashing threads (they end when the last clone is dropped).
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("courier-argon2-{index}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "could not start a password hashing thread");
            }
        }
        Self {
            jobs,
            dummy_hash: Arc::new(OnceCell::new()),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(work());
            }))
            .map_err(|_| {
                ApiError::internal(anyhow::anyhow!("the password hashing threads are gone"))
            })?;
        result
            .await
            .map_err(|_| ApiError::internal(anyhow::anyhow!("a password hashing job was dropped")))
    }

    /// Hashes a password (Argon2id, default parameters, random salt) to a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || argon2_hash(password.as_bytes()))
            .await?
            .map_err(|error| ApiError::internal(anyhow::anyhow!("argon2: {error}")))
    }

    /// Checks a password against a stored hash; with no stored hash (unknown user) it
    /// spends the same time and answers `false`.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let (stored, known) = match stored {
            Some(stored) => (stored, true),
            None => {
                let dummy = self
                    .dummy_hash
                    .get_or_try_init(|| self.hash("courier-dummy-password".to_owned()))
                    .await?;
                (dummy.clone(), false)
            }
        };
        let matches = self
            .run(move || argon2_verify(password.as_bytes(), &stored))
            .await?;
        Ok(known && matches)
    }
}

thread_local! {
    /// Each hashing thread's Argon2 working memory (19 MiB with default parameters),
    /// allocated once and reused, so hashing never churns the allocator.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_argon2_memory<T>(blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    ARGON2_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() != blocks {
            memory.clear();
            memory.shrink_to_fit();
            memory.resize(blocks, Block::default());
        }
        work(&mut memory)
    })
}

/// Argon2id (default parameters) of `password` with a fresh salt, as a PHC string that
/// any Argon2 implementation verifies.
fn argon2_hash(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let params = Params::default();
    let salt = SaltString::generate(&mut PasswordRng);
    let mut salt_buffer = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buffer)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        with_argon2_memory(params.block_count(), |memory| {
            argon2.hash_password_into_with_memory(password, salt_bytes, out, memory)
        })
        .map_err(Into::into)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches a PHC Argon2 hash (constant-time comparison).
fn argon2_verify(password: &[u8], stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let Ok(version) = hash.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let mut salt_buffer = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buffer) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut computed = vec![0u8; expected.len()];
    let hashed = with_argon2_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, salt_bytes, &mut computed, memory)
    });
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&computed).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let passwords = Passwords::new(2);
        let hash = passwords.hash("correct horse".to_owned()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            passwords
                .verify("correct horse".to_owned(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".to_owned(), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("courier-dummy-password".to_owned(), None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn hashes_are_standard_phc_strings_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Ours verifies with the argon2 crate's own verifier, and the other way round.
        let ours = argon2_hash(b"swordfish").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"swordfish", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"swordfisH", &parsed)
                .is_err()
        );
        let salt = SaltString::generate(&mut PasswordRng);
        let theirs = Argon2::default()
            .hash_password(b"swordfish", &salt)
            .unwrap()
            .to_string();
        assert!(argon2_verify(b"swordfish", &theirs));
        assert!(!argon2_verify(b"swordfisH", &theirs));
        assert!(!argon2_verify(b"swordfish", "not a hash"));
    }
}
