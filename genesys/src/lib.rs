//! Genesys Cloud client for the webhook relay: resolves a region to its API and login
//! hosts, obtains and caches OAuth client-credentials tokens, looks up an Open Messaging
//! integration and posts delivery receipts for outbound messages.
//!
//! One [`GenesysClient`] per process: it is cheap to clone and shares one
//! `reqwest::Client` and one token cache between clones.

#![warn(missing_docs)]

mod client;
mod error;
mod integration;
mod receipt;
mod region;
mod response;
mod retry;
mod secret;
mod token;

pub use client::{ClientConfig, GenesysClient};
pub use error::{Call, Error};
pub use integration::{IntegrationCreateError, OpenIntegration};
pub use receipt::{
    GENERAL_ERROR, Receipt, ReceiptChannel, ReceiptDirection, ReceiptError, ReceiptReason, ReceiptRecipient,
    ReceiptStatus,
};
pub use region::{Environment, EnvironmentError, REGIONS, Region};
pub use retry::RetryPolicy;
pub use secret::{Credentials, Secret};
pub use token::{AccessToken, TokenProvider};
