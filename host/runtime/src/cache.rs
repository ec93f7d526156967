//! The compiled-component cache (`*.cwasm` under `--plugin-cache-dir`, by default the user's
//! cache directory shared by every data directory), verified before use.
//!
//! Loading a compiled component maps native code into the process, so an entry is used only if
//! it is provably one this runtime wrote for exactly these component bytes:
//! - an entry's name carries the SHA-256 of the component bytes together with wasmtime's
//!   compatibility hash (its version and compilation settings) and this format's version;
//! - an entry starts with an HMAC-SHA256, under a random key kept in the cache directory
//!   (`cache.key`, mode 0600), of that hash and the compiled bytes. Anyone who can write the
//!   directory but not read the key cannot forge an entry, and an entry copied from another
//!   component's name does not verify (the hash of the component is inside the MAC).
//!
//! A missing, damaged or rejected entry is recompiled and rewritten (write-then-rename). The
//! bytes are verified in memory and deserialized from that same buffer, so the file cannot
//! change between the check and the use. Plugins can never be granted a directory that
//! contains the cache (see `PluginRuntime::new_store`).

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

type HmacSha256 = Hmac<Sha256>;

/// Starts every entry; bump when the layout or the key derivation changes.
const MAGIC: &[u8; 8] = b"MLCWASM1";
const TAG_LEN: usize = 32;
const KEY_FILE: &str = "cache.key";
const KEY_LEN: usize = 32;
/// Compiled entries kept (bytes): past it, the least recently used are deleted when a new one
/// is written. Every plugin build adds entries, and the directory is shared and long-lived.
const MAX_CACHE_BYTES: u64 = 256 * 1024 * 1024;

pub(crate) struct CompiledCache {
    dir: PathBuf,
    /// The canonical form of `dir`, for the capability check.
    canonical_dir: PathBuf,
    key: [u8; KEY_LEN],
    engine: Engine,
}

/// Where one component's compiled form lives, and what it is bound to.
pub(crate) struct Entry {
    path: PathBuf,
    /// SHA-256 of the format, wasmtime's compatibility hash and the component bytes.
    id: [u8; 32],
}

/// Feeds `std::hash::Hash` values (wasmtime's compatibility hash) into SHA-256.
struct ShaHasher<'a>(&'a mut Sha256);

impl Hasher for ShaHasher<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompiledCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Private to this user (best effort: the MAC is what protects the entries).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        let canonical_dir = dir
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        Ok(CompiledCache {
            dir: dir.to_path_buf(),
            canonical_dir,
            key,
            engine: engine.clone(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether granting `host_dir` would expose the cache (it is the cache or an ancestor).
    pub(crate) fn is_inside(&self, host_dir: &Path) -> bool {
        match host_dir.canonicalize() {
            Ok(granted) => self.canonical_dir.starts_with(granted),
            // A directory that does not exist cannot be preopened anyway.
            Err(_) => false,
        }
    }

    pub(crate) fn entry(&self, stem: &str, component: &[u8]) -> Entry {
        let mut sha = Sha256::new();
        sha.update(MAGIC);
        std::hash::Hash::hash(
            &self.engine.precompile_compatibility_hash(),
            &mut ShaHasher(&mut sha),
        );
        sha.update((component.len() as u64).to_le_bytes());
        sha.update(component);
        let id: [u8; 32] = sha.finalize().into();
        let hex: String = id[..16].iter().map(|b| format!("{b:02x}")).collect();
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Entry {
            path: self.dir.join(format!("{stem}-{hex}.cwasm")),
            id,
        }
    }

    fn tag(&self, entry: &Entry, compiled: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(MAGIC);
        mac.update(&entry.id);
        mac.update(compiled);
        mac
    }

    /// The verified compiled component, or `None` (missing, or rejected with a warning).
    pub(crate) fn load(&self, entry: &Entry) -> Option<Component> {
        let bytes = match std::fs::read(&entry.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.reject(entry, &format!("unreadable: {e}"));
                return None;
            }
        };
        let header = MAGIC.len() + TAG_LEN;
        if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
            self.reject(entry, "not an entry this runtime wrote");
            return None;
        }
        let (tag, compiled) = bytes[MAGIC.len()..].split_at(TAG_LEN);
        if self.tag(entry, compiled).verify_slice(tag).is_err() {
            self.reject(
                entry,
                "its MAC does not match (modified, or written for another component)",
            );
            return None;
        }
        // SAFETY: `compiled` is exactly the bytes this runtime serialized for this component
        // with this engine configuration: its MAC under our secret key, bound to the
        // component's hash and wasmtime's compatibility hash, was verified just above on this
        // same in-memory buffer.
        match unsafe { Component::deserialize(&self.engine, compiled) } {
            Ok(component) => {
                // Recently used, for `trim` (best effort: the entry's bytes are not touched).
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&entry.path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(component)
            }
            Err(e) => {
                self.reject(entry, &format!("cannot be deserialized: {e:#}"));
                None
            }
        }
    }

    fn reject(&self, entry: &Entry, reason: &str) {
        tracing::warn!(path = %entry.path.display(), reason,
            "compiled-plugin cache entry rejected: recompiling");
    }

    /// Writes the entry (write-then-rename: a crash never leaves a torn file under the name).
    pub(crate) fn store(&self, entry: &Entry, component: &Component) {
        if let Err(e) = self.try_store(entry, component) {
            tracing::warn!(path = %entry.path.display(), error = %e, "cannot cache compiled plugin");
        }
        trim(&self.dir, &entry.path, MAX_CACHE_BYTES);
    }

    fn try_store(&self, entry: &Entry, component: &Component) -> Result<(), String> {
        let compiled = component.serialize().map_err(|e| format!("{e:#}"))?;
        let tag = self.tag(entry, &compiled).finalize().into_bytes();
        let tmp = entry
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&tag)?;
            file.write_all(&compiled)?;
            file.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.to_string());
        }
        std::fs::rename(&tmp, &entry.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            e.to_string()
        })
    }
}

/// Deletes the least recently used entries (by modification time, which `load` refreshes)
/// until those left take at most `max_bytes`; `keep` (the entry just written) stays.
fn trim(dir: &Path, keep: &Path, max_bytes: u64) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm") && p != keep)
        .filter_map(|p| {
            let meta = std::fs::symlink_metadata(&p).ok()?;
            Some((meta.modified().ok()?, meta.len(), p))
        })
        .collect();
    let kept = std::fs::metadata(keep).map(|m| m.len()).unwrap_or(0);
    let mut total: u64 = kept + entries.iter().map(|e| e.1).sum::<u64>();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// The cache's MAC key: read it if it is ours (32 bytes, private to this user), else make a
/// new one (which invalidates every existing entry).
fn load_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], String> {
    if let Some(key) = read_private_key(path) {
        return Ok(key);
    }
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for the cache key: {e}"))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write the cache key {}: {e}", path.display())
    })?;
    // Several hosts may share the cache: the first key in place wins and the others adopt it
    // (a rename over it would leave those that read it earlier with a key nobody else has).
    // A damaged or foreign key file is replaced.
    let installed = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read_private_key(path) {
            Some(theirs) => Ok(theirs),
            None => std::fs::rename(&tmp, path).map(|()| key),
        },
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&tmp);
    installed.map_err(|e| format!("cannot write the cache key {}: {e}", path.display()))
}

fn read_private_key(path: &Path) -> Option<[u8; KEY_LEN]> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Someone else's key (written by whoever could write the directory) is not ours.
        #[cfg(target_os = "linux")]
        if let Ok(me) = std::fs::metadata("/proc/self") {
            if metadata.uid() != me.uid() {
                tracing::warn!(path = %path.display(), "the cache key belongs to another user: replacing it");
                return None;
            }
        }
        // Readable or writable by others: whoever could see it could forge entries.
        if metadata.mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the cache key is not private (mode & 077 != 0): replacing it");
            return None;
        }
    }
    let bytes = std::fs::read(path).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_deletes_the_least_recently_used_entries_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        let mut paths = Vec::new();
        for (i, age) in [50u64, 10, 40, 20].into_iter().enumerate() {
            let path = dir.path().join(format!("p{i}.cwasm"));
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(now - std::time::Duration::from_secs(age))
                .unwrap();
            paths.push(path);
        }
        let key = dir.path().join(KEY_FILE);
        std::fs::write(&key, [0u8; KEY_LEN]).unwrap();
        let fresh = dir.path().join("new.cwasm");
        std::fs::write(&fresh, vec![0u8; 100]).unwrap();
        // 500 bytes of entries, room for 300: the two oldest go (ages 50 and 40).
        trim(dir.path(), &fresh, 300);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [false, true, false, true]);
        assert!(fresh.exists() && key.exists());
        // Under the limit nothing is deleted.
        trim(dir.path(), &fresh, 300);
        assert!(paths[1].exists() && paths[3].exists());
    }
}
