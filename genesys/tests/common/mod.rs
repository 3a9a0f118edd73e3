//! The shared fake Genesys Cloud of `testkit`, with the client of this crate pointed at it.

#![allow(dead_code)] // each test binary uses a different part of it

use genesys_cloud::{ClientConfig, Credentials, Environment, GenesysClient, RetryPolicy};
use std::time::Duration;
pub use testkit::genesys_fake::*;
pub use testkit::wait::bounded;

/// This crate's client, pointed at a fake.
pub trait ClientOf {
    /// The environment pointing at this fake.
    fn environment(&self) -> Environment;
    /// A client with the right credentials and quick retries.
    fn client(&self) -> GenesysClient {
        self.client_with(Credentials::new(CLIENT_ID, CLIENT_SECRET), fast_config())
    }
    /// A client with these credentials and tuning.
    fn client_with(&self, credentials: Credentials, config: ClientConfig) -> GenesysClient {
        GenesysClient::with_config(reqwest::Client::new(), self.environment(), credentials, config)
    }
}

impl ClientOf for FakeGenesys {
    fn environment(&self) -> Environment {
        Environment::from_region("us-east-1")
            .unwrap()
            .with_api_base_url(&self.base_url)
            .unwrap()
            .with_login_base_url(&self.base_url)
            .unwrap()
    }
}

/// Retries that keep tests quick: 3 attempts, 20-100 ms backoff, Retry-After up to 5 s.
pub fn fast_config() -> ClientConfig {
    ClientConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(5),
        },
        request_timeout: Duration::from_secs(5),
        token_refresh_margin: None,
    }
}
