//! TLS for `wss`: rustls with the ring provider and the webpki root certificates.
//!
//! The provider is chosen here rather than process-wide, so the SDK works whatever other
//! rustls providers the app links in (rustls refuses to guess when there are two).
//! `https` goes through reqwest's own rustls setup (`rustls-tls`, also ring and webpki).

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

/// A client configuration for `wss` connections.
pub(crate) fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}
