//! HTTP clients for talking to gateways, harnesses and clusters. TLS uses rustls with the ring
//! provider, installed once per process before the first client is built.

use std::time::Duration;

/// Installs the process-wide TLS crypto provider (idempotent).
pub fn ensure_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client with a whole-request timeout.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    ensure_crypto();
    reqwest::Client::builder().timeout(timeout).build()
}

/// As [`direct_http_client`], with no overall time limit: for calls that stream for as long as
/// they last (a harness's event bus passed on by the sandbox bootstrap).
pub fn direct_http_client_untimed() -> Result<reqwest::Client, reqwest::Error> {
    ensure_crypto();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
}

/// An HTTP client for sandboxes and harnesses (loopback, pod IPs, cluster services): never
/// through an HTTP(S)_PROXY, which could not reach them.
pub fn direct_http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    ensure_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
}
