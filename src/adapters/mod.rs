//! Ready-made parts for common runtimes and HTTP clients, behind cargo features.
//!
//! - [`AddressGuard`] (always available): which IP addresses a push may be
//!   sent to, refusing loopback, private and other special ranges so a bot
//!   owner cannot point a webhook at the platform's internal network.
//! - [`TokioRuntime`] (feature `tokio`): a [`Runtime`](crate::Runtime) that
//!   spawns and sleeps on tokio.
//! - [`ReqwestTransport`] (feature `reqwest`): a [`Transport`](crate::Transport)
//!   over reqwest with rustls, pooled connections, no redirects, no proxies
//!   and the [`AddressGuard`] applied to every address it connects to.
//!
//! ```
//! use eventhook::adapters::AddressGuard;
//!
//! assert!(AddressGuard::new().check("127.0.0.1".parse().unwrap()).is_err());
//! ```

mod address_guard;
#[cfg(feature = "reqwest")]
mod reqwest;
#[cfg(feature = "tokio")]
mod tokio;

pub use self::address_guard::{AddressGuard, BlockReason, BlockedAddress};
#[cfg(feature = "reqwest")]
pub use self::reqwest::{ReqwestTransport, ReqwestTransportBuildError, ReqwestTransportBuilder};
#[cfg(feature = "tokio")]
pub use self::tokio::TokioRuntime;
