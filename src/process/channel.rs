//! Channels between the processes: the wake-up eventfd (workers to
//! supervisor) and each worker's own channel (requests handed to it in fork
//! per request, and its answers).

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

/// The first byte of a request handed to a worker (a payload may be
/// empty, and an empty SEQPACKET message would read as end of file).
const GIVE: u8 = b'Q';
/// A worker's answer: it took the request and serves it.
const CLAIMED: u8 = b'C';
/// A worker's answer: it is stopping and hands the request back unserved.
const HANDED_BACK: u8 = b'B';

/// Makes a worker's own channel to the supervisor, a `SOCK_SEQPACKET`
/// pair: `(supervisor end, worker end)`. The spawner's intermediate makes
/// one for each worker before forking it and sends the supervisor's end
/// with the worker's pidfd; no other worker ever holds either end.
pub(crate) fn link_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Supervisor: hands `payload` to the one worker whose channel `sock` is
/// (fork per request): its data as bytes, its descriptors with
/// `SCM_RIGHTS`. Never blocks. The supervisor keeps its own copies until
/// the worker claims the request (see [`hear`]).
///
/// # Errors
///
/// `EAGAIN` if the socket is full; `EPIPE` and the like once the worker is
/// gone.
pub(crate) fn give(sock: RawFd, payload: &Payload) -> nix::Result<()> {
    let fds = payload.raw_fds();
    let iov = [IoSlice::new(&[GIVE]), IoSlice::new(payload.data_bytes())];
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

/// Worker: takes the request handed to it from its own channel, without
/// blocking. `Ok(None)` at end of file (the supervisor is gone).
///
/// # Errors
///
/// `EAGAIN` when nothing is there yet; `EBADMSG` for a message that is not
/// a request.
pub(crate) fn take(sock: RawFd) -> nix::Result<Option<Payload>> {
    let mut data = vec![0u8; 1 + MAX_PAYLOAD_DATA];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_PAYLOAD_FDS]);
    let (len, fds) = recv_with_rights(sock, &mut data, &mut cmsg)?;
    if len == 0 {
        return Ok(None);
    }
    if data[0] != GIVE {
        return Err(Errno::EBADMSG);
    }
    data.truncate(len);
    data.remove(0);
    Ok(Some(Payload::from_parts(data, fds)))
}

/// What a worker tells the supervisor on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Told {
    /// It took the request it was given and serves it.
    Claimed,
    /// It is stopping: the request it was given goes back, unserved.
    HandedBack,
}

/// Worker: tells the supervisor `what` on its own channel. Never blocks.
pub(crate) fn tell(sock: RawFd, what: Told) -> nix::Result<()> {
    let byte = match what {
        Told::Claimed => CLAIMED,
        Told::HandedBack => HANDED_BACK,
    };
    nix::sys::socket::send(
        sock,
        &[byte],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
    .map(drop)
}

/// One message the supervisor read from a worker's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// A well-formed message.
    Told(Told),
    /// Anything else: its length and how many descriptors came with it
    /// (closed at once). The worker that sent it is retired.
    Malformed { len: usize, fds: usize },
    /// End of file: the worker is gone.
    Closed,
}

/// Supervisor: reads one message from a worker's channel without blocking.
/// At most a few bytes are read, and any descriptor a worker sent is
/// closed at once: nothing a worker writes is kept.
///
/// # Errors
///
/// `EAGAIN` when there is nothing to read.
pub(crate) fn hear(sock: RawFd) -> nix::Result<Heard> {
    let mut buf = [0u8; 8];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let (len, flags) = (msg.bytes, msg.flags);
    let fds = owned_rights(&msg).len();
    let truncated = flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    Ok(match (&buf[..len.min(buf.len())], fds, truncated) {
        ([], 0, false) => Heard::Closed,
        ([CLAIMED], 0, false) => Heard::Told(Told::Claimed),
        ([HANDED_BACK], 0, false) => Heard::Told(Told::HandedBack),
        _ => Heard::Malformed {
            len,
            fds: fds + usize::from(flags.contains(MsgFlags::MSG_CTRUNC)),
        },
    })
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
