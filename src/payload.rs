//! What a fork-per-request worker receives: file descriptors plus serde data.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// At most this many bytes of serialised data in one payload.
pub const MAX_PAYLOAD_DATA: usize = 32 * 1024;
/// At most this many file descriptors in one payload.
pub const MAX_PAYLOAD_FDS: usize = 8;

/// The request data that a fork-per-request acceptor passes with
/// [`UpdateStatus::Req`](crate::UpdateStatus::Req) and that the worker gets
/// back in [`DaemonSignal::Child`](crate::DaemonSignal::Child).
///
/// It is plain data on purpose (DESIGN.md invariant 4): file descriptors, such
/// as the accepted connection, travel to the worker with `SCM_RIGHTS`, and the
/// rest as serde-serialised (JSON) bytes, at most [`MAX_PAYLOAD_DATA`] bytes
/// and [`MAX_PAYLOAD_FDS`] descriptors. The supervisor closes its copies of the
/// descriptors as soon as the worker exists.
///
/// Cloning is cheap and shares the descriptors: whichever clone calls
/// [`take_fd`](Self::take_fd) first gets each one.
///
/// # Examples
///
/// ```
/// use actix_daemon::Payload;
/// use std::os::fd::OwnedFd;
///
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// let payload = Payload::new().with_fd(OwnedFd::from(a))?.with_data(&("peer", 42))?;
/// let (who, n): (String, u32) = payload.data()?;
/// assert_eq!((who.as_str(), n), ("peer", 42));
/// assert!(payload.take_fd(0).is_some());
/// assert!(payload.take_fd(0).is_none(), "taken once");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Payload {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    data: Vec<u8>,
    fds: Mutex<Vec<Option<OwnedFd>>>,
    fd_count: usize,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("data_bytes", &self.inner.data.len())
            .field("fds", &self.inner.fd_count)
            .finish()
    }
}

impl Payload {
    /// An empty payload.
    pub fn new() -> Payload {
        Payload::default()
    }

    fn rebuild(self, f: impl FnOnce(&mut Vec<u8>, &mut Vec<Option<OwnedFd>>)) -> Payload {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            data: shared.data.clone(),
            fds: Mutex::new(Vec::new()),
            fd_count: 0,
        });
        let mut data = inner.data;
        let mut fds = inner.fds.into_inner().unwrap_or_else(|p| p.into_inner());
        f(&mut data, &mut fds);
        Payload {
            inner: Arc::new(Inner {
                fd_count: fds.len(),
                data,
                fds: Mutex::new(fds),
            }),
        }
    }

    /// Adds a file descriptor (an accepted connection, a pipe...).
    ///
    /// # Errors
    ///
    /// [`Error::PayloadTooLarge`] past [`MAX_PAYLOAD_FDS`] descriptors.
    pub fn with_fd(self, fd: impl Into<OwnedFd>) -> Result<Payload> {
        if self.inner.fd_count >= MAX_PAYLOAD_FDS {
            return Err(Error::PayloadTooLarge {
                what: "fds",
                size: self.inner.fd_count + 1,
                limit: MAX_PAYLOAD_FDS,
            });
        }
        let fd = fd.into();
        Ok(self.rebuild(|_, fds| fds.push(Some(fd))))
    }

    /// Sets the serialised data, replacing any set before.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadData`] if `value` cannot be serialised,
    /// [`Error::PayloadTooLarge`] if it is over [`MAX_PAYLOAD_DATA`] bytes.
    pub fn with_data<T: Serialize + ?Sized>(self, value: &T) -> Result<Payload> {
        let bytes = serde_json::to_vec(value).map_err(Error::PayloadData)?;
        if bytes.len() > MAX_PAYLOAD_DATA {
            return Err(Error::PayloadTooLarge {
                what: "data",
                size: bytes.len(),
                limit: MAX_PAYLOAD_DATA,
            });
        }
        Ok(self.rebuild(|data, _| *data = bytes))
    }

    /// The data, deserialised.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadData`] if the data is absent or not a `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.inner.data).map_err(Error::PayloadData)
    }

    /// The raw serialised data (JSON), empty if none was set.
    pub fn data_bytes(&self) -> &[u8] {
        &self.inner.data
    }

    /// How many file descriptors the payload carries (taken or not).
    pub fn fd_count(&self) -> usize {
        self.inner.fd_count
    }

    /// Takes the file descriptor at `index`; `None` if there is none or it was taken.
    pub fn take_fd(&self, index: usize) -> Option<OwnedFd> {
        let mut fds = self.inner.fds.lock().unwrap_or_else(|p| p.into_inner());
        fds.get_mut(index).and_then(Option::take)
    }

    /// Whether the payload carries neither data nor descriptors.
    pub fn is_empty(&self) -> bool {
        self.inner.data.is_empty() && self.inner.fd_count == 0
    }

    /// The descriptors still held, for sending with `SCM_RIGHTS`.
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        let fds = self.inner.fds.lock().unwrap_or_else(|p| p.into_inner());
        fds.iter().flatten().map(AsRawFd::as_raw_fd).collect()
    }

    /// Rebuilds a payload from what arrived over the workers' socket.
    pub(crate) fn from_parts(data: Vec<u8>, fds: Vec<OwnedFd>) -> Payload {
        Payload {
            inner: Arc::new(Inner {
                data,
                fd_count: fds.len(),
                fds: Mutex::new(fds.into_iter().map(Some).collect()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let mut p = Payload::new();
        for _ in 0..MAX_PAYLOAD_FDS {
            let (a, _) = std::os::unix::net::UnixStream::pair().unwrap();
            p = p.with_fd(OwnedFd::from(a)).unwrap();
        }
        let (a, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            p.with_fd(OwnedFd::from(a)),
            Err(Error::PayloadTooLarge { what: "fds", .. })
        ));
        let big = "x".repeat(MAX_PAYLOAD_DATA);
        assert!(matches!(
            Payload::new().with_data(&big),
            Err(Error::PayloadTooLarge { what: "data", .. })
        ));
        assert!(Payload::new().is_empty());
        assert!(Payload::new().data::<u32>().is_err());
    }

    #[test]
    fn clones_share_descriptors() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = Payload::new().with_fd(OwnedFd::from(a)).unwrap();
        let q = p.clone();
        assert_eq!(p.raw_fds().len(), 1);
        assert!(q.take_fd(0).is_some());
        assert!(p.take_fd(0).is_none());
        assert!(p.raw_fds().is_empty());
        assert_eq!(p.fd_count(), 1);
    }
}
