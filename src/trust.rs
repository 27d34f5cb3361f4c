//! What root may open or execute: pure checks over `stat` data, and the
//! opens that use them (issue 11, points 3 and 4).
//!
//! Files root opens (log file, pidfile) are opened with `O_NOFOLLOW`
//! (`O_NONBLOCK` too, so that a FIFO planted there cannot block the open),
//! created with `O_EXCL` when new, then checked through the descriptor
//! ([`check_file`]): a regular file, one link, owned by the supervisor's
//! euid or the service user, not writable by group or others. A file this
//! process did not create is never chowned.
//!
//! The binary of an upgrade is checked like OpenSSH's StrictModes
//! ([`check_exec_chain`]): the file and every directory up to `/` owned by
//! root or the supervisor's euid and not writable by group or others (a
//! sticky directory is refused too, as OpenSSH does).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// What `stat` says about one path, as far as the checks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) kind: Kind,
    pub(crate) uid: u32,
    /// The permission bits, with the sticky bit (`0o7777`).
    pub(crate) mode: u32,
    pub(crate) nlink: u64,
}

/// The kind of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    Dir,
    Symlink,
    Other,
}

impl Facts {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Facts {
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::Regular
        } else {
            Kind::Other
        };
        Facts {
            kind,
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
            nlink: meta.nlink(),
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Symlink,
    NotRegular,
    NotDir,
    Links(u64),
    Owner(u32),
    GroupWritable,
    WorldWritable,
    /// A directory writable by others without the sticky bit.
    SharedDir,
    /// A sticky shared directory, and the file in it is not this process's.
    NotOursInSharedDir(u32),
    /// The file is not an ELF executable (a script's interpreter would not be checked).
    NotElf,
    /// A directory on the way (`path`) failed `why`.
    InDir(PathBuf, Box<Refusal>),
    Io(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Symlink => write!(f, "it is a symbolic link"),
            Refusal::NotRegular => write!(f, "it is not a regular file"),
            Refusal::NotDir => write!(f, "it is not a directory"),
            Refusal::Links(n) => write!(f, "it has {n} hard links, expected 1"),
            Refusal::Owner(uid) => write!(
                f,
                "it is owned by uid {uid}, not by a user allowed to own it"
            ),
            Refusal::GroupWritable => write!(f, "it is writable by its group"),
            Refusal::WorldWritable => write!(f, "it is writable by others"),
            Refusal::SharedDir => write!(f, "its directory is writable by others and not sticky"),
            Refusal::NotOursInSharedDir(uid) => write!(
                f,
                "it is owned by uid {uid} in a directory shared with other users"
            ),
            Refusal::NotElf => write!(f, "it is not an ELF executable"),
            Refusal::InDir(dir, why) => write!(f, "directory {}: {why}", dir.display()),
            Refusal::Io(e) => write!(f, "{e}"),
        }
    }
}

fn writable(mode: u32) -> Result<(), Refusal> {
    if mode & 0o002 != 0 {
        Err(Refusal::WorldWritable)
    } else if mode & 0o020 != 0 {
        Err(Refusal::GroupWritable)
    } else {
        Ok(())
    }
}

/// A file root opened: regular, one link, owned by one of `owners`, not
/// writable by group or others.
pub(crate) fn check_file(f: &Facts, owners: &[u32]) -> Result<(), Refusal> {
    match f.kind {
        Kind::Regular => {}
        Kind::Symlink => return Err(Refusal::Symlink),
        _ => return Err(Refusal::NotRegular),
    }
    if f.nlink != 1 {
        return Err(Refusal::Links(f.nlink));
    }
    if !owners.contains(&f.uid) {
        return Err(Refusal::Owner(f.uid));
    }
    writable(f.mode)
}

/// The directory of a pidfile: owned by root or `euid` and not writable by
/// group or others; or, if writable by others, sticky, with the file in it
/// owned by `euid` (`file_uid`).
pub(crate) fn check_pid_dir(dir: &Facts, euid: u32, file_uid: u32) -> Result<(), Refusal> {
    if dir.kind != Kind::Dir {
        return Err(Refusal::NotDir);
    }
    if dir.uid != 0 && dir.uid != euid {
        return Err(Refusal::Owner(dir.uid));
    }
    if dir.mode & 0o022 == 0 {
        return Ok(());
    }
    if dir.mode & 0o1000 == 0 {
        return Err(Refusal::SharedDir);
    }
    if file_uid != euid {
        return Err(Refusal::NotOursInSharedDir(file_uid));
    }
    Ok(())
}

/// StrictModes for one path of an exec: the file (regular, not a symlink)
/// or a directory, owned by root or `euid`, not writable by group or
/// others, sticky or not.
pub(crate) fn check_exec_one(f: &Facts, euid: u32, want_dir: bool) -> Result<(), Refusal> {
    match (f.kind, want_dir) {
        (Kind::Symlink, _) => return Err(Refusal::Symlink),
        (Kind::Dir, true) | (Kind::Regular, false) => {}
        (_, true) => return Err(Refusal::NotDir),
        (_, false) => return Err(Refusal::NotRegular),
    }
    if f.uid != 0 && f.uid != euid {
        return Err(Refusal::Owner(f.uid));
    }
    writable(f.mode)
}

/// Looks paths up without following the last component (`lstat`).
pub(crate) trait Lookup {
    fn lstat(&self, path: &Path) -> io::Result<Facts>;
}

/// The real filesystem.
pub(crate) struct RealFs;

impl Lookup for RealFs {
    fn lstat(&self, path: &Path) -> io::Result<Facts> {
        std::fs::symlink_metadata(path).map(|m| Facts::of(&m))
    }
}

/// Every directory of the absolute path `dir`, from `/` down to `dir`
/// itself, passes [`check_exec_one`] (a symlink on the way is refused:
/// callers pass a resolved path).
pub(crate) fn check_exec_chain(fs: &impl Lookup, dir: &Path, euid: u32) -> Result<(), Refusal> {
    let mut at = PathBuf::from("/");
    let mut all = vec![at.clone()];
    for part in dir.components().skip(1) {
        at.push(part);
        all.push(at.clone());
    }
    for d in all {
        let facts = fs.lstat(&d).map_err(|e| Refusal::Io(e.to_string()))?;
        check_exec_one(&facts, euid, true).map_err(|why| Refusal::InDir(d, Box::new(why)))?;
    }
    Ok(())
}

const NOFOLLOW: OFlag = OFlag::O_NOFOLLOW
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY);

/// Opens `name` in `dir` without following a symlink: first `O_EXCL`
/// creation, then (if it exists) the existing file; a few rounds if it
/// vanishes in between. Returns the file and whether this call created it.
fn open_in(
    dir: &OwnedFd,
    name: &Path,
    access: OFlag,
    create: bool,
    mode: u32,
) -> Result<(File, bool), Refusal> {
    let io = |e: nix::errno::Errno| Refusal::Io(io::Error::from(e).to_string());
    for _ in 0..4 {
        if create {
            match openat(
                dir.as_fd(),
                name,
                access | NOFOLLOW | OFlag::O_CREAT | OFlag::O_EXCL,
                Mode::from_bits_truncate(mode as _),
            ) {
                Ok(fd) => return Ok((clear_nonblock(fd), true)),
                Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(io(e)),
            }
        }
        match openat(dir.as_fd(), name, access | NOFOLLOW, Mode::empty()) {
            Ok(fd) => return Ok((clear_nonblock(fd), false)),
            Err(nix::errno::Errno::ELOOP) => return Err(Refusal::Symlink),
            Err(nix::errno::Errno::ENOENT) if create => continue,
            Err(nix::errno::Errno::ENXIO) => return Err(Refusal::NotRegular),
            Err(e) => return Err(io(e)),
        }
    }
    Err(Refusal::Io("the file kept vanishing while opened".into()))
}

/// Clears `O_NONBLOCK` only (`O_APPEND` must stay: every process of the
/// daemon appends to one log file).
fn clear_nonblock(fd: OwnedFd) -> File {
    use nix::fcntl::{FcntlArg, fcntl};
    if let Ok(flags) = fcntl(&fd, FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        let _ = fcntl(&fd, FcntlArg::F_SETFL(flags));
    }
    File::from(fd)
}

fn split(path: &Path) -> Result<(&Path, &Path), Refusal> {
    let name = path
        .file_name()
        .map(Path::new)
        .ok_or_else(|| Refusal::Io("the path has no file name".into()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

fn open_dir(dir: &Path) -> Result<OwnedFd, Refusal> {
    nix::fcntl::open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| Refusal::Io(format!("its directory: {}", io::Error::from(e))))
}

fn fstat(fd: &impl AsFd) -> Result<Facts, Refusal> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| Refusal::Io(e.to_string()))?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::Regular,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    };
    Ok(Facts {
        kind,
        uid: st.st_uid,
        mode: st.st_mode & 0o7777,
        nlink: st.st_nlink,
    })
}

/// How a file root opens is checked.
pub(crate) struct Opening<'a> {
    /// Owners accepted for an existing file (the euid first).
    pub(crate) owners: &'a [u32],
    /// Create it (`O_EXCL`, this mode) when absent.
    pub(crate) create: Option<u32>,
    /// Check its directory as a pidfile's ([`check_pid_dir`]).
    pub(crate) pid_dir: bool,
    pub(crate) access: OFlag,
}

/// Opens `path` as [`Opening`] says; the file and whether it was created.
/// A refused file that this call created is removed again.
pub(crate) fn open_checked(path: &Path, how: &Opening<'_>) -> Result<(File, bool), Refusal> {
    let (dir, name) = split(path)?;
    let dirfd = open_dir(dir)?;
    let euid = nix::unistd::geteuid().as_raw();
    let dir_facts = fstat(&dirfd)?;
    if how.pid_dir {
        // The owner of the file is checked again below, once it is open.
        check_pid_dir(&dir_facts, euid, euid)
            .or_else(|why| match why {
                Refusal::NotOursInSharedDir(_) => Ok(()),
                other => Err(other),
            })
            .map_err(|why| Refusal::InDir(dir.to_owned(), Box::new(why)))?;
    }
    let (file, created) = open_in(
        &dirfd,
        name,
        how.access,
        how.create.is_some(),
        how.create.unwrap_or(0),
    )?;
    let facts = fstat(&file)?;
    let checked = check_file(&facts, how.owners).and_then(|()| {
        if how.pid_dir {
            check_pid_dir(&dir_facts, euid, facts.uid)
        } else {
            Ok(())
        }
    });
    if let Err(why) = checked {
        if created {
            let _ = nix::unistd::unlinkat(&dirfd, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        return Err(why);
    }
    Ok((file, created))
}

/// Opens the binary of an upgrade after StrictModes checks of its
/// directories (resolved) and of the file itself, through the descriptor
/// it returns: exec that descriptor (`/proc/self/fd/N`), not the path.
pub(crate) fn open_exec_checked(path: &Path) -> Result<File, Refusal> {
    let (dir, name) = split(path)?;
    let dirfd = open_dir(dir)?;
    let real = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dirfd)
    ))
    .map_err(|e| Refusal::Io(e.to_string()))?;
    let euid = nix::unistd::geteuid().as_raw();
    check_exec_chain(&RealFs, &real, euid)?;
    let (file, _) = open_in(&dirfd, name, OFlag::O_RDONLY, false, 0)?;
    let facts = fstat(&file)?;
    check_exec_one(&facts, euid, false)?;
    let mut magic = [0u8; 4];
    let n = nix::sys::uio::pread(&file, &mut magic, 0).map_err(|e| Refusal::Io(e.to_string()))?;
    if n != 4 || &magic != b"\x7fELF" {
        return Err(Refusal::NotElf);
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn f(kind: Kind, uid: u32, mode: u32, nlink: u64) -> Facts {
        Facts {
            kind,
            uid,
            mode,
            nlink,
        }
    }
    const R: Kind = Kind::Regular;
    const D: Kind = Kind::Dir;

    #[test]
    fn files_root_opens() {
        let owners = [0, 65534];
        let table = [
            (f(R, 0, 0o644, 1), Ok(())),
            (f(R, 65534, 0o640, 1), Ok(())),
            (f(Kind::Symlink, 0, 0o777, 1), Err(Refusal::Symlink)),
            (f(Kind::Other, 0, 0o644, 1), Err(Refusal::NotRegular)),
            (f(D, 0, 0o755, 2), Err(Refusal::NotRegular)),
            (f(R, 0, 0o644, 2), Err(Refusal::Links(2))),
            (f(R, 1000, 0o644, 1), Err(Refusal::Owner(1000))),
            (f(R, 0, 0o664, 1), Err(Refusal::GroupWritable)),
            (f(R, 65534, 0o646, 1), Err(Refusal::WorldWritable)),
        ];
        for (facts, want) in table {
            assert_eq!(check_file(&facts, &owners), want, "{facts:?}");
        }
    }

    #[test]
    fn pidfile_directories() {
        let table = [
            (f(D, 0, 0o755, 2), 65534, Ok(())),
            (f(D, 0, 0o1777, 2), 0, Ok(())),
            (
                f(D, 0, 0o1777, 2),
                65534,
                Err(Refusal::NotOursInSharedDir(65534)),
            ),
            (f(D, 0, 0o777, 2), 0, Err(Refusal::SharedDir)),
            (f(D, 0, 0o775, 2), 0, Err(Refusal::SharedDir)),
            (f(D, 65534, 0o755, 2), 0, Err(Refusal::Owner(65534))),
            (f(R, 0, 0o755, 1), 0, Err(Refusal::NotDir)),
        ];
        for (dir, file_uid, want) in table {
            assert_eq!(check_pid_dir(&dir, 0, file_uid), want, "{dir:?} {file_uid}");
        }
    }

    #[test]
    fn exec_strict_modes() {
        let table = [
            (f(R, 0, 0o755, 2), false, Ok(())),
            (f(R, 65534, 0o755, 1), false, Err(Refusal::Owner(65534))),
            (f(R, 0, 0o775, 1), false, Err(Refusal::GroupWritable)),
            (f(R, 0, 0o757, 1), false, Err(Refusal::WorldWritable)),
            (f(Kind::Symlink, 0, 0o777, 1), false, Err(Refusal::Symlink)),
            (f(D, 0, 0o755, 1), false, Err(Refusal::NotRegular)),
            (f(D, 0, 0o755, 2), true, Ok(())),
            (f(D, 0, 0o1777, 2), true, Err(Refusal::WorldWritable)),
            (f(D, 0, 0o1770, 2), true, Err(Refusal::GroupWritable)),
            (f(Kind::Symlink, 0, 0o777, 1), true, Err(Refusal::Symlink)),
        ];
        for (facts, dir, want) in table {
            assert_eq!(check_exec_one(&facts, 0, dir), want, "{facts:?}");
        }
        // A non-root supervisor may own its own binary.
        assert_eq!(check_exec_one(&f(R, 1000, 0o755, 1), 1000, false), Ok(()));
    }

    struct Fake(HashMap<PathBuf, Facts>);
    impl Lookup for Fake {
        fn lstat(&self, path: &Path) -> io::Result<Facts> {
            self.0
                .get(path)
                .copied()
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
    }

    #[test]
    fn every_directory_up_to_the_root_is_checked() {
        let ok = f(D, 0, 0o755, 2);
        let mut fs = Fake(HashMap::new());
        for p in ["/", "/opt", "/opt/app"] {
            fs.0.insert(p.into(), ok);
        }
        assert_eq!(check_exec_chain(&fs, Path::new("/opt/app"), 0), Ok(()));
        fs.0.insert("/opt".into(), f(D, 65534, 0o755, 2));
        assert_eq!(
            check_exec_chain(&fs, Path::new("/opt/app"), 0),
            Err(Refusal::InDir(
                "/opt".into(),
                Box::new(Refusal::Owner(65534))
            ))
        );
        fs.0.insert("/opt".into(), f(Kind::Symlink, 0, 0o777, 1));
        assert!(
            matches!(check_exec_chain(&fs, Path::new("/opt/app"), 0), Err(Refusal::InDir(_, b)) if *b == Refusal::Symlink)
        );
    }

    #[test]
    fn real_files_in_a_temp_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let how = Opening {
            owners: &[euid],
            create: Some(0o640),
            pid_dir: true,
            access: OFlag::O_RDWR,
        };
        let p = dir.path().join("a.pid");
        let (_, created) = open_checked(&p, &how).unwrap();
        assert!(created);
        let (_, created) = open_checked(&p, &how).unwrap();
        assert!(!created);
        let decoy = dir.path().join("decoy");
        std::fs::write(&decoy, "secret").unwrap();
        let link = dir.path().join("link.pid");
        std::os::unix::fs::symlink(&decoy, &link).unwrap();
        assert_eq!(open_checked(&link, &how).unwrap_err(), Refusal::Symlink);
        assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "secret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(open_checked(&p, &how).unwrap_err(), Refusal::WorldWritable);
        let exe = std::env::current_exe().unwrap();
        if nix::unistd::geteuid().is_root() {
            assert!(
                open_exec_checked(&exe).is_ok(),
                "{:?}",
                open_exec_checked(&exe)
            );
        }
        assert_eq!(open_exec_checked(&p).unwrap_err(), Refusal::WorldWritable);
    }

    /// What the checked open costs against a plain one; run with
    /// `cargo test --lib trust::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, "").unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let how = Opening {
            owners: &[euid],
            create: Some(0o640),
            pid_dir: false,
            access: OFlag::O_WRONLY | OFlag::O_APPEND,
        };
        let n = 20_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            drop(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&p)
                    .unwrap(),
            );
        }
        let plain = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            drop(open_checked(&p, &how).unwrap());
        }
        let checked = t.elapsed() / n;
        let exe = std::env::current_exe().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            let _ = open_exec_checked(&exe);
        }
        let exec = t.elapsed() / 1000;
        eprintln!("plain open {plain:?}, checked open {checked:?}, upgrade binary check {exec:?}");
    }
}
