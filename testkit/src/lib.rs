//! Test support shared by every crate's tests, none of it a mock: real `redis-server`
//! processes ([`redis`]), certificates ([`tls`]), a proxy that loses replies on purpose
//! ([`proxy`]), child processes and commands under deadlines ([`process`]), bounded waits
//! ([`wait`]), small HTTP clients ([`http`]), the relay binary and signed events ([`relay`]),
//! a scripted downstream ([`downstream`]), a fake Genesys Cloud that follows the documented
//! API ([`genesys_fake`]), a steady load of signed webhooks ([`load`]) and, with the `kube` feature, the test cluster ([`kube`]).

pub mod downstream;
pub mod genesys_fake;
pub mod http;
#[cfg(feature = "kube")]
pub mod kube;
pub mod load;
pub mod oci;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod relay;
pub mod tls;
pub mod wait;

pub use process::{Stopped, free_port, peak_rss_bytes, rss_bytes, workspace_bin};
pub use redis::{RedisBackend, RedisCluster, RedisSentinels, RedisServer, ServerTls};
pub use wait::{eventually, wait_for, wait_until};
