//! Which allocators a compare runs: ours, glibc, the packaged peers (found
//! on disk, installed with apt when missing) and the reference row with
//! libc at our layout. Builds given with `--with` are ours too: shown beside
//! the peers, never judged against.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An allocator to compare: `None` preload is glibc itself.
#[derive(Clone, Debug)]
pub struct Allocator {
    /// Short name.
    pub name: &'static str,
    /// Library for `LD_PRELOAD`.
    pub preload: Option<PathBuf>,
}

/// The name of our allocator in reports.
pub const OURS: &str = "rseq-alloc";

/// glibc run with `bench/c/layout_twin.c` preloaded, which puts libc where
/// our library puts it: a reference row, not a peer (see
/// [`same_layout_markdown`](super::same_layout_markdown)).
pub const GLIBC_OUR_LAYOUT: &str = "glibc@our-layout";

/// A packaged allocator: its name in reports, the library to preload, and
/// the Debian package that ships it.
struct Peer {
    name: &'static str,
    library: &'static str,
    package: &'static str,
}

const PEERS: [Peer; 4] = [
    Peer { name: "jemalloc", library: "libjemalloc.so.2", package: "libjemalloc2" },
    Peer { name: "tcmalloc", library: "libtcmalloc_minimal.so.4", package: "libtcmalloc-minimal4" },
    Peer { name: "mimalloc", library: "libmimalloc.so.2", package: "libmimalloc2.0" },
    Peer { name: "tbb", library: "libtbbmalloc_proxy.so.2", package: "libtbbmalloc2" },
];

/// The packaged peers' names, in the order they are run.
pub fn peer_names() -> impl Iterator<Item = &'static str> {
    PEERS.iter().map(|p| p.name)
}

/// Whether `name` is one of the allocators the targets compare us with:
/// glibc and the packaged peers, not builds added with `--with` (those are
/// ours: old versions and variants, shown beside the peers).
pub fn is_peer(name: &str) -> bool {
    name == "glibc" || PEERS.iter().any(|p| p.name == name)
}

const LIB_DIRS: [&str; 3] = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"];

fn find_library(file: &str) -> Option<PathBuf> {
    LIB_DIRS.iter().map(|d| Path::new(d).join(file)).find(|p| p.exists())
}

/// The peers that are installed, installing the missing ones with apt when
/// we can; the rest come back as `(name, why it was skipped)`.
pub fn peers() -> (Vec<Allocator>, Vec<(&'static str, String)>) {
    let missing: Vec<&Peer> = PEERS.iter().filter(|p| find_library(p.library).is_none()).collect();
    if !missing.is_empty() {
        let packages: Vec<&str> = missing.iter().map(|p| p.package).collect();
        eprintln!("installing missing peers with apt-get: {}", packages.join(" "));
        if !apt_install(&packages, false) {
            apt_install(&packages, true);
        }
    }
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for peer in &PEERS {
        match find_library(peer.library) {
            Some(path) => found.push(Allocator { name: peer.name, preload: Some(path) }),
            None => skipped.push((
                peer.name,
                format!("{} not found and `apt-get install {}` did not provide it", peer.library, peer.package),
            )),
        }
    }
    (found, skipped)
}

/// Installs `packages` with apt-get, first refreshing its lists if `update`.
pub fn apt_install(packages: &[&str], update: bool) -> bool {
    if update {
        let _ = Command::new("apt-get").args(["update", "-qq"]).stdout(Stdio::null()).status();
    }
    Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An allocator given on the command line as `NAME=LIBRARY.so`: another
/// build of ours, such as an older one.
pub fn with_build(spec: &str) -> Result<Allocator, String> {
    let (name, path) = spec.split_once('=').ok_or("--with NAME=LIBRARY.so")?;
    if !Path::new(path).exists() {
        return Err(format!("--with {name}: {path} does not exist"));
    }
    // The name lives as long as the process, like the built-in ones.
    Ok(Allocator { name: Box::leak(name.to_string().into_boxed_str()), preload: Some(path.into()) })
}

/// Every allocator a compare runs, in the order the rounds shuffle: ours,
/// glibc, the peers `found`, glibc at our layout (`twin` preloaded), then
/// the `--with` builds; only the `selected` names when any are given.
pub fn lineup(
    ours: PathBuf,
    twin: PathBuf,
    found: Vec<Allocator>,
    with: Vec<Allocator>,
    selected: &[String],
) -> Vec<Allocator> {
    let mut allocators =
        vec![Allocator { name: OURS, preload: Some(ours) }, Allocator { name: "glibc", preload: None }];
    allocators.extend(found);
    allocators.push(Allocator { name: GLIBC_OUR_LAYOUT, preload: Some(twin) });
    allocators.extend(with);
    if !selected.is_empty() {
        allocators.retain(|a| selected.iter().any(|n| n == a.name));
    }
    allocators
}
