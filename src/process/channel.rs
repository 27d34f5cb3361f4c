//! Channels between the processes: the wake-up eventfd (workers to
//! supervisor) and the fork-per-request dispatch socket.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use crate::error::{Error, Result};
use crate::payload::{MAX_PAYLOAD_DATA, MAX_PAYLOAD_FDS, Payload};

/// An eventfd shared by every process: a worker writes to it after a state
/// change the supervisor acts on; the supervisor's `DaemonActor` reads it.
#[derive(Debug)]
pub(crate) struct Wake(EventFd);

impl Wake {
    pub(crate) fn new() -> Result<Wake> {
        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(Wake)
            .map_err(|err| Error::sys("eventfd", err))
    }

    /// Wakes the supervisor (never blocks).
    pub(crate) fn wake(&self) {
        let _ = self.0.write(1);
    }

    /// Drains pending wake-ups; whether there were any.
    pub(crate) fn drain(&self) -> bool {
        self.0.read().is_ok()
    }
}

impl AsRawFd for Wake {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A descriptor kept open by an `Arc` for as long as a reactor watches it.
#[derive(Debug)]
pub(crate) struct Held<T: AsRawFd>(pub(crate) Arc<T>);

impl<T: AsRawFd> AsRawFd for Held<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Registers a shared descriptor with the current tokio reactor.
pub(crate) fn watch<T: AsRawFd>(fd: Arc<T>) -> io::Result<tokio::io::unix::AsyncFd<Held<T>>> {
    // SAFETY: `Held` owns a strong reference to the object that owns the
    // descriptor (an `OwnedFd` or an `EventFd`), so the descriptor stays
    // open and refers to the same file description until the `AsyncFd`,
    // and with it `Held`, is dropped; `as_raw_fd` always returns it.
    unsafe { tokio::io::unix::AsyncFd::register(Held(fd)) }.map_err(io::Error::from)
}

/// The first byte of a dispatched payload (a payload may be empty, and an
/// empty SEQPACKET message would read as end of file).
const DISPATCH: u8 = b'Q';

/// Makes the dispatch socket pair: `(supervisor end, workers' end)`. A
/// fork-per-request request travels from the supervisor to whichever
/// worker waiting for one reads it first: its data as bytes, its
/// descriptors with `SCM_RIGHTS`.
pub(crate) fn dispatch_pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|err| Error::sys("socketpair for requests", err))
}

/// Supervisor: hands `payload` to the next worker that reads the dispatch
/// socket. Never blocks. The supervisor's descriptors stay its own (drop the
/// payload to close them).
///
/// # Errors
///
/// `EAGAIN` if the socket is full; other errors if no worker end is open.
pub(crate) fn dispatch_send(sock: RawFd, payload: &Payload) -> nix::Result<()> {
    let fds = payload.raw_fds();
    let iov = [
        IoSlice::new(&[DISPATCH]),
        IoSlice::new(payload.data_bytes()),
    ];
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        sock,
        &iov,
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// Worker: takes one payload from the dispatch socket without blocking.
/// `Ok(None)` at end of file (the supervisor is gone).
///
/// # Errors
///
/// `EAGAIN` when another worker took it first (or nothing is there).
pub(crate) fn dispatch_recv(sock: RawFd) -> nix::Result<Option<Payload>> {
    let mut data = vec![0u8; 1 + MAX_PAYLOAD_DATA];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_PAYLOAD_FDS]);
    let (len, fds) = recv_with_rights(sock, &mut data, &mut cmsg)?;
    if len == 0 {
        return Ok(None);
    }
    if data[0] != DISPATCH {
        return Err(Errno::EBADMSG);
    }
    data.truncate(len);
    data.remove(0);
    Ok(Some(Payload::from_parts(data, fds)))
}

/// Reads one message without blocking, with the descriptors it brought
/// (owned, close-on-exec): `(bytes read, descriptors)`.
#[allow(clippy::ptr_arg)] // nix's recvmsg takes the control buffer as a Vec.
pub(super) fn recv_with_rights(
    sock: RawFd,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    Ok((msg.bytes, owned_rights(&msg)))
}

/// Like [`recv_with_rights`], waiting for a message (the spawner's loop).
#[allow(clippy::ptr_arg)] // nix's recvmsg takes the control buffer as a Vec.
pub(super) fn recv_blocking_with_rights(
    sock: RawFd,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    Ok((msg.bytes, owned_rights(&msg)))
}

/// The descriptors an `SCM_RIGHTS` message brought, owned.
fn owned_rights(msg: &nix::sys::socket::RecvMsg<'_, '_, ()>) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS gave this process a new descriptor.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
    fds
}

/// Reads a pipe to its end without blocking the runtime (a binary
/// upgrade's verdict). Dropping the future closes the pipe.
pub(crate) async fn read_to_end(file: std::fs::File) -> Vec<u8> {
    let mut text = Vec::new();
    let fd = OwnedFd::from(file);
    if nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .is_err()
    {
        return text;
    }
    let Ok(fd) = watch(Arc::new(fd)) else {
        return text;
    };
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return text;
        };
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&*fd.get_ref().0, &mut buf) {
            Ok(0) => return text,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN) => guard.clear_ready(),
            Err(Errno::EINTR) => {}
            Err(_) => return text,
        }
    }
}
