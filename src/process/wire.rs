//! The spawner protocol: typed messages between the supervisor and the
//! spawner over their `SOCK_SEQPACKET` pair, one encoder and one decoder
//! each, so that neither side hand-encodes bytes.
//!
//! | direction | message | bytes | descriptors |
//! |---|---|---|---|
//! | supervisor to spawner | [`SpawnRequest::Spawn`] | `S`, slot (u64 LE) | none |
//! | supervisor to spawner | [`SpawnRequest::Reopen`] | `H` | the new log file |
//! | spawner to supervisor | [`SpawnReply::Spawned`] | `P`, slot, pid (i32 LE) | the worker's pidfd, then the supervisor's end of the worker's own channel |
//! | spawner to supervisor | [`SpawnReply::Failed`] | `E`, slot, errno (i32 LE) | none |
//!
//! A message of any other shape decodes to `None` and is logged by the side
//! that read it; it changes nothing.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::unistd::Pid;

use super::channel::recv_with_rights;
use crate::scoreboard::SlotId;

const SPAWN: u8 = b'S';
const REOPEN: u8 = b'H';
const SPAWNED: u8 = b'P';
const FAILED: u8 = b'E';
const REQUEST_LEN: usize = 9;
const REPLY_LEN: usize = 13;

/// What the supervisor asks of the spawner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnRequest {
    /// Fork a worker for `slot`.
    Spawn { slot: SlotId },
    /// Reopen the log file (after HUP), so that workers forked from now on
    /// start on the new file.
    Reopen,
}

impl SpawnRequest {
    pub(crate) fn encode(self) -> Vec<u8> {
        match self {
            SpawnRequest::Spawn { slot } => {
                let mut buf = Vec::with_capacity(REQUEST_LEN);
                buf.push(SPAWN);
                buf.extend_from_slice(&(slot.0 as u64).to_le_bytes());
                buf
            }
            SpawnRequest::Reopen => vec![REOPEN],
        }
    }

    pub(crate) fn decode(buf: &[u8]) -> Option<SpawnRequest> {
        match buf {
            [REOPEN] => Some(SpawnRequest::Reopen),
            [SPAWN, slot @ ..] if slot.len() == 8 => {
                let slot = u64::from_le_bytes(slot.try_into().ok()?);
                Some(SpawnRequest::Spawn {
                    slot: SlotId(usize::try_from(slot).ok()?),
                })
            }
            _ => None,
        }
    }
}

/// What the spawner (or its intermediate) tells the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnReply {
    /// A worker for `slot` runs as `pid`; its pidfd comes with the message.
    Spawned { slot: SlotId, pid: Pid },
    /// The fork for `slot` failed with `errno`.
    Failed { slot: SlotId, errno: Errno },
}

impl SpawnReply {
    pub(crate) fn encode(self) -> [u8; REPLY_LEN] {
        let (kind, slot, value) = match self {
            SpawnReply::Spawned { slot, pid } => (SPAWNED, slot, pid.as_raw()),
            SpawnReply::Failed { slot, errno } => (FAILED, slot, errno as i32),
        };
        let mut buf = [0u8; REPLY_LEN];
        buf[0] = kind;
        buf[1..9].copy_from_slice(&(slot.0 as u64).to_le_bytes());
        buf[9..13].copy_from_slice(&value.to_le_bytes());
        buf
    }

    pub(crate) fn decode(buf: &[u8]) -> Option<SpawnReply> {
        if buf.len() != REPLY_LEN {
            return None;
        }
        let slot = u64::from_le_bytes(buf[1..9].try_into().ok()?);
        let slot = SlotId(usize::try_from(slot).ok()?);
        let value = i32::from_le_bytes(buf[9..13].try_into().ok()?);
        match buf[0] {
            SPAWNED if value > 0 => Some(SpawnReply::Spawned {
                slot,
                pid: Pid::from_raw(value),
            }),
            FAILED => Some(SpawnReply::Failed {
                slot,
                errno: Errno::from_raw(value),
            }),
            _ => None,
        }
    }
}

/// Supervisor: sends a request to the spawner. Never blocks.
///
/// # Errors
///
/// `EAGAIN` if the socket is full (retry later), `EPIPE` and the like if the
/// spawner is gone.
pub(crate) fn send_request(sock: RawFd, request: SpawnRequest) -> nix::Result<()> {
    sendmsg::<()>(
        sock,
        &[IoSlice::new(&request.encode())],
        &[],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// Supervisor: sends `Reopen` with the log file's new descriptor, opened
/// and checked by the supervisor (`process::open_log_checked`).
pub(crate) fn send_reopen(sock: RawFd, log: BorrowedFd<'_>) -> nix::Result<()> {
    let fds = [log.as_raw_fd()];
    sendmsg::<()>(
        sock,
        &[IoSlice::new(&SpawnRequest::Reopen.encode())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// Spawner: waits for the next request, with the descriptor it brought
/// (`Reopen` carries exactly one, `Spawn` none). `Ok(None)` at end of file
/// (the supervisor is gone); `Ok(Some(Err(len)))` for a message of `len`
/// bytes that is not a request, or has the wrong descriptors.
#[allow(clippy::type_complexity)]
pub(crate) fn recv_request(
    sock: RawFd,
) -> nix::Result<Option<Result<(SpawnRequest, Option<OwnedFd>), usize>>> {
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (len, mut fds) = super::channel::recv_blocking_with_rights(sock, &mut buf, &mut cmsg)?;
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(match (SpawnRequest::decode(&buf[..len]), fds.len()) {
        (Some(r @ SpawnRequest::Spawn { .. }), 0) => Ok((r, None)),
        (Some(SpawnRequest::Reopen), 1) => Ok((SpawnRequest::Reopen, fds.pop())),
        _ => Err(len),
    }))
}

/// Spawner side: sends a reply; for `Spawned`, with the worker's pidfd and
/// the supervisor's end of the worker's own channel, in that order.
pub(crate) fn send_reply(
    sock: RawFd,
    reply: SpawnReply,
    fds: &[BorrowedFd<'_>],
) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        sock,
        &[IoSlice::new(&reply.encode())],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// One message read from the spawner.
#[derive(Debug)]
pub(crate) enum FromSpawner {
    /// A reply, with the descriptors that came with it (for `Spawned`: the
    /// pidfd, then the supervisor's end of the worker's channel).
    Reply(SpawnReply, Vec<OwnedFd>),
    /// A message that is not a reply (its length).
    Malformed(usize),
    /// End of file: the spawner is gone.
    Closed,
}

/// Supervisor: reads one message from the spawner without blocking.
///
/// # Errors
///
/// `EAGAIN` when there is nothing to read.
pub(crate) fn recv_reply(sock: RawFd) -> nix::Result<FromSpawner> {
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let (len, fds) = recv_with_rights(sock, &mut buf, &mut cmsg)?;
    if len == 0 && fds.is_empty() {
        return Ok(FromSpawner::Closed);
    }
    Ok(match SpawnReply::decode(&buf[..len]) {
        Some(reply) if fds.len() <= 2 => FromSpawner::Reply(reply, fds),
        _ => FromSpawner::Malformed(len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn requests_round_trip(slot in 0usize..=crate::config::MAX_CHILDREN, reopen: bool) {
            let request = if reopen { SpawnRequest::Reopen } else { SpawnRequest::Spawn { slot: SlotId(slot) } };
            prop_assert_eq!(SpawnRequest::decode(&request.encode()), Some(request));
        }

        #[test]
        fn replies_round_trip(slot in 0usize..=crate::config::MAX_CHILDREN, pid in 1i32..=i32::MAX, errno in 0i32..200, spawned: bool) {
            let reply = if spawned {
                SpawnReply::Spawned { slot: SlotId(slot), pid: Pid::from_raw(pid) }
            } else {
                SpawnReply::Failed { slot: SlotId(slot), errno: Errno::from_raw(errno) }
            };
            prop_assert_eq!(SpawnReply::decode(&reply.encode()), Some(reply));
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = SpawnRequest::decode(&bytes);
            let _ = SpawnReply::decode(&bytes);
        }
    }

    #[test]
    fn reopen_carries_exactly_one_descriptor() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        use std::os::fd::AsFd;
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let log = std::fs::File::open("/dev/null").unwrap();
        send_reopen(a.as_raw_fd(), log.as_fd()).unwrap();
        match recv_request(b.as_raw_fd()).unwrap() {
            Some(Ok((SpawnRequest::Reopen, Some(_fd)))) => {}
            other => panic!("{other:?}"),
        }
        // A Reopen without its descriptor is not a request.
        send_request(a.as_raw_fd(), SpawnRequest::Reopen).unwrap();
        assert!(matches!(recv_request(b.as_raw_fd()).unwrap(), Some(Err(1))));
        let spawn = SpawnRequest::Spawn { slot: SlotId(2) };
        send_request(a.as_raw_fd(), spawn).unwrap();
        assert!(matches!(recv_request(b.as_raw_fd()).unwrap(), Some(Ok((r, None))) if r == spawn));
        drop(a);
        assert!(recv_request(b.as_raw_fd()).unwrap().is_none());
    }

    #[test]
    fn a_spawned_reply_carries_a_pidfd_and_nonsense_is_malformed() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let me = super::super::pidfd::Pidfd::open(nix::unistd::getpid()).unwrap();
        let reply = SpawnReply::Spawned {
            slot: SlotId(3),
            pid: nix::unistd::getpid(),
        };
        use std::os::fd::AsFd;
        let (link, _worker_end) = super::super::channel::link_pair().unwrap();
        send_reply(a.as_raw_fd(), reply, &[me.as_fd(), link.as_fd()]).unwrap();
        match recv_reply(b.as_raw_fd()).unwrap() {
            FromSpawner::Reply(got, fds) => {
                assert_eq!(got, reply);
                assert_eq!(fds.len(), 2, "the pidfd and the worker's channel");
            }
            other => panic!("{other:?}"),
        }
        nix::sys::socket::send(a.as_raw_fd(), b"PX", MsgFlags::empty()).unwrap();
        assert!(matches!(
            recv_reply(b.as_raw_fd()).unwrap(),
            FromSpawner::Malformed(2)
        ));
        drop(a);
        assert!(matches!(
            recv_reply(b.as_raw_fd()).unwrap(),
            FromSpawner::Closed
        ));
    }
}
