//! Compiles the code of the README and the book as doctests.

/// The book's "Quick start" chapter.
#[doc = include_str!("../book/src/quick-start.md")]
pub struct QuickStart;

/// The book's "Daemonizing" chapter.
#[doc = include_str!("../book/src/daemonizing.md")]
pub struct Daemonizing;

/// The book's "Pre-forking" chapter.
#[doc = include_str!("../book/src/pre-forking.md")]
pub struct PreForking;

/// The book's "Fork per request" chapter.
#[doc = include_str!("../book/src/fork-per-request.md")]
pub struct ForkPerRequest;

/// The book's "actix-web on a pre-forked pool" chapter (the `web` feature).
#[cfg(feature = "web")]
#[doc = include_str!("../book/src/actix-web.md")]
pub struct ActixWeb;

/// The book's "Status and peek" chapter.
#[doc = include_str!("../book/src/status-and-peek.md")]
pub struct StatusAndPeek;

/// The book's "Babysitting and limits" chapter.
#[doc = include_str!("../book/src/babysitting.md")]
pub struct Babysitting;

/// The book's "Configuration" chapter.
#[doc = include_str!("../book/src/configuration.md")]
pub struct Configuration;

/// The book's "Operations" chapter.
#[doc = include_str!("../book/src/operations.md")]
pub struct Operations;

/// The book's "Testing a daemon" chapter.
#[doc = include_str!("../book/src/testing.md")]
pub struct Testing;

/// The book's "Performance" chapter.
#[doc = include_str!("../book/src/performance.md")]
pub struct Performance;

/// The book's "Coming from POE::Component::Daemon" chapter.
#[doc = include_str!("../book/src/coming-from-poe.md")]
pub struct ComingFromPoe;

/// The book's "Security" chapter.
#[doc = include_str!("../book/src/security.md")]
pub struct Security;
