//! Operations: the pidfile and the privilege drop.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Group, Uid, User};
use serde::Serialize;

use crate::error::{Error, Result};

/// A pidfile, locked (`flock`) for the daemon's life.
///
/// Taken before anything forks, so that a second instance refuses to start
/// with [`Error::PidfileLocked`] in the launching process. A stale pidfile
/// (its daemon dead, so unlocked) is simply taken over. It is truncated and
/// written only once locked, after detaching (so it holds the supervisor's
/// pid), and removed when `run` returns. The spawner and workers do not hold
/// it: only the supervisor's life keeps the lock.
#[derive(Debug)]
pub(crate) struct Pidfile {
    path: PathBuf,
    lock: Option<Flock<File>>,
}

impl Pidfile {
    /// Opens (without following a symlink, `O_EXCL` when new) and checks
    /// the pidfile, then locks it. Refused with [`Error::UnsafePath`]: a
    /// symlink, not a regular file, more than one link, writable by group
    /// or others, owned by anyone but this process's euid (or the service
    /// user when the supervisor drops to it too, [`PrivilegeScope::All`]),
    /// or in a directory not owned by root or the euid, or writable by
    /// others unless sticky with the file ours. A file created here is
    /// chowned, by descriptor, to the service user only with
    /// [`PrivilegeScope::All`]; otherwise it stays root's, so that the
    /// service user cannot write another pid in it.
    pub(crate) fn lock(path: &Path, privileges: Option<&Privileges>) -> Result<Pidfile> {
        let euid = nix::unistd::geteuid();
        let all = privileges.filter(|p| p.scope == PrivilegeScope::All);
        let mut owners = vec![euid.as_raw()];
        if let Some((_, uid)) = all.and_then(|p| p.user.as_ref()) {
            owners.push(uid.as_raw());
        }
        let how = crate::trust::Opening {
            owners: &owners,
            create: Some(0o644),
            pid_dir: true,
            access: nix::fcntl::OFlag::O_RDWR,
        };
        let (file, created) =
            crate::trust::open_checked(path, &how).map_err(|why| Error::UnsafePath {
                what: "pidfile",
                path: path.to_owned(),
                reason: why.to_string(),
            })?;
        if created
            && let Some(p) = all
            && euid.is_root()
        {
            let (uid, gid) = p.owner();
            nix::unistd::fchown(&file, uid, Some(gid)).map_err(|err| Error::Pidfile {
                path: path.to_owned(),
                source: err.into(),
            })?;
        }
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Pidfile {
                path: path.to_owned(),
                lock: Some(lock),
            }),
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(Error::PidfileLocked {
                    path: path.to_owned(),
                    pid: text.trim().parse().ok(),
                })
            }
            Err((_, errno)) => Err(Error::Pidfile {
                path: path.to_owned(),
                source: errno.into(),
            }),
        }
    }

    /// Where a pidfile moves during a binary upgrade (nginx's convention).
    pub(crate) fn oldbin(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".oldbin");
        PathBuf::from(name)
    }

    /// Writes this process's pid (the supervisor's, after detaching).
    pub(crate) fn write_pid(&mut self) -> Result<()> {
        let path = self.path.clone();
        let err = |source: std::io::Error| Error::Pidfile {
            path: path.clone(),
            source,
        };
        let Some(file) = self.lock.as_deref_mut() else {
            return Ok(());
        };
        file.set_len(0).map_err(err)?;
        file.rewind().map_err(err)?;
        writeln!(file, "{}", std::process::id()).map_err(err)?;
        file.sync_data().map_err(err)
    }

    /// The locked descriptor, for the spawner to close.
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        self.lock.as_ref().map(|f| f.as_raw_fd())
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Remove it only while it is ours: locked by us and holding our pid.
        if let Some(lock) = self.lock.take() {
            let ours = std::fs::read_to_string(&self.path)
                .map(|t| t.trim() == std::process::id().to_string())
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(&self.path);
            }
            // After a binary upgrade this supervisor's pidfile was moved.
            let old = Pidfile::oldbin(&self.path);
            let old_ours = std::fs::read_to_string(&old)
                .map(|t| t.trim() == std::process::id().to_string())
                .unwrap_or(false);
            if old_ours {
                let _ = std::fs::remove_file(&old);
            }
            drop(lock);
        }
    }
}

/// Which processes drop privileges to [`user`](crate::DaemonBuilder::user)
/// and [`group`](crate::DaemonBuilder::group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivilegeScope {
    /// The spawner and every worker (the default, as Apache and nginx): the
    /// supervisor keeps its privileges, to reopen root-owned paths and to
    /// signal anything; the application code that serves requests does not.
    #[default]
    Workers,
    /// Every process, the supervisor included, right after detaching.
    All,
}

/// A resolved user and group to drop to.
#[derive(Debug, Clone)]
pub(crate) struct Privileges {
    pub(crate) user: Option<(String, Uid)>,
    pub(crate) gid: Gid,
    pub(crate) scope: PrivilegeScope,
}

impl Privileges {
    /// Resolves names before anything forks.
    pub(crate) fn resolve(
        user: Option<&str>,
        group: Option<&str>,
        scope: PrivilegeScope,
    ) -> Result<Option<Privileges>> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let user = match user {
            Some(name) => Some(
                User::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| Error::UnknownUser(name.to_owned()))?,
            ),
            None => None,
        };
        let gid = match (group, &user) {
            (Some(name), _) => {
                Group::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| Error::UnknownGroup(name.to_owned()))?
                    .gid
            }
            (None, Some(user)) => user.gid,
            (None, None) => unreachable!("checked above"),
        };
        // Only root may change its user or groups: say so before forking
        // rather than have the spawner fail. A process that already runs
        // as the user and group asked for (started by systemd's `User=`,
        // say) has nothing to drop.
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            let same_user = user.as_ref().is_none_or(|u| u.uid == euid);
            if same_user && gid == nix::unistd::getegid() {
                return Ok(None);
            }
            return Err(Error::NeedRoot);
        }
        Ok(Some(Privileges {
            user: user.map(|u| (u.name, u.uid)),
            gid,
            scope,
        }))
    }

    /// The uid to own the log file and pidfile, if a user is set.
    pub(crate) fn owner(&self) -> (Option<Uid>, Gid) {
        (self.user.as_ref().map(|(_, uid)| *uid), self.gid)
    }

    /// Drops privileges in this process: supplementary groups, then the
    /// group, then the user; then checks that root cannot be regained.
    pub(crate) fn drop_now(&self) -> Result<()> {
        let fail = |op: &'static str, err: Errno| Error::sys(op, err);
        match &self.user {
            Some((name, _)) => {
                let name =
                    CString::new(name.as_str()).map_err(|_| Error::UnknownUser(name.clone()))?;
                nix::unistd::initgroups(&name, self.gid).map_err(|e| fail("initgroups", e))?;
            }
            None => nix::unistd::setgroups(&[self.gid]).map_err(|e| fail("setgroups", e))?,
        }
        nix::unistd::setgid(self.gid).map_err(|e| fail("setgid", e))?;
        if let Some((_, uid)) = &self.user {
            nix::unistd::setuid(*uid).map_err(|e| fail("setuid", e))?;
            if !uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
                return Err(Error::PrivilegesKept);
            }
        }
        Ok(())
    }
}
