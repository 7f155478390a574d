//! Reading the files and turning them into a `rustls::ServerConfig`.
//!
//! Reading and parsing are separate steps so that the watcher can hash the
//! bytes first and skip everything else when nothing changed.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{SectionKind, SliceIter};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs1KeyDer,
    PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use zeroize::Zeroizing;

use crate::config::{ClientAuth, LoadOptions, TlsFiles};
use crate::error::{CertError, Error, FileKind, FileRole, KeyError, PemError};
use crate::info::CertInfo;

/// SHA-256 digest used to recognise content that was seen before.
pub(crate) type Digest = [u8; 32];

/// The raw bytes of every input, read once per reload attempt.
pub(crate) struct Inputs {
    cert: Vec<u8>,
    /// Zeroed on drop, so key bytes do not linger in freed memory.
    key: Zeroizing<Vec<u8>>,
    client_ca: Option<Vec<u8>>,
    crls: Vec<Vec<u8>>,
}

impl fmt::Debug for Inputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inputs")
            .field("cert_len", &self.cert.len())
            .field("key", &"<redacted>")
            .field("client_ca_len", &self.client_ca.as_ref().map(Vec::len))
            .field("crls", &self.crls.len())
            .finish()
    }
}

/// How long a read that keeps straddling swaps of the files is repeated
/// before it is reported as [`Error::KeptChanging`].
const SETTLE_BOUND: Duration = Duration::from_secs(2);

/// The longest pause between two attempts; the first retry is immediate.
const MAX_PAUSE: Duration = Duration::from_millis(50);

impl Inputs {
    /// Reads every configured file, each with the size cap.
    ///
    /// Kubelet replaces every file of a Secret volume with one rename, but
    /// the files are read one after the other: a read that straddles the
    /// rename would pair the old certificate with the new key. So every
    /// file read stays open until each path has been checked to still name
    /// the very file that was read. Comparing inode numbers taken before
    /// and after the read is not enough: kubelet deletes the previous
    /// generation, and the file system hands its freed inode numbers to the
    /// next one, so a read that straddled two swaps looks unchanged. An
    /// open file's inode cannot be freed, so it cannot reappear under
    /// another file. The read is repeated until it is consistent, for at
    /// most [`SETTLE_BOUND`].
    pub(crate) fn read(files: &TlsFiles, limit: u64) -> Result<Self, Error> {
        Self::read_settled(files, limit, SETTLE_BOUND, |_| {})
    }

    /// [`read`](Self::read) with the bound given and `after_each` called
    /// once a file has been read (tests swap the files there).
    fn read_settled(
        files: &TlsFiles,
        limit: u64,
        bound: Duration,
        after_each: impl FnMut(FileRole),
    ) -> Result<Self, Error> {
        let mut list = vec![
            (FileRole::Certificate, files.cert.as_path()),
            (FileRole::PrivateKey, files.key.as_path()),
        ];
        list.extend(files.client_ca.as_deref().map(|p| (FileRole::ClientCa, p)));
        list.extend(files.crls.iter().map(|p| (FileRole::Crl, p.as_path())));
        let mut read = read_set(&list, limit, bound, after_each)?.into_iter();
        let mut next = || read.next().unwrap_or_default();
        let cert = std::mem::take(&mut *next());
        let key = next();
        let client_ca = files
            .client_ca
            .as_ref()
            .map(|_| std::mem::take(&mut *next()));
        let crls = files
            .crls
            .iter()
            .map(|_| std::mem::take(&mut *next()))
            .collect();
        Ok(Self {
            cert,
            key,
            client_ca,
            crls,
        })
    }

    /// Digest of all the bytes: equal digests mean nothing to reload.
    pub(crate) fn content_hash(&self, mode: ClientAuth) -> Digest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.trust_hash(mode));
        absorb(&mut ctx, b"cert", Some(&self.cert));
        absorb(&mut ctx, b"key", Some(&self.key));
        digest_of(ctx)
    }

    /// Digest of what decides which clients are trusted. When it changes,
    /// sessions established under the old trust must not resume.
    pub(crate) fn trust_hash(&self, mode: ClientAuth) -> Digest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        absorb(&mut ctx, mode.to_string().as_bytes(), None);
        absorb(&mut ctx, b"ca", self.client_ca.as_deref());
        for crl in &self.crls {
            absorb(&mut ctx, b"crl", Some(crl));
        }
        digest_of(ctx)
    }
}

/// Reads every file of `files` as one consistent set, each with the size
/// cap (see [`Inputs::read`] for why and how), repeating the read for at
/// most `bound`; `after_each` is called once a file has been read. Every
/// buffer is zeroed on drop, as any may hold a key.
pub(crate) fn read_set(
    files: &[(FileRole, &Path)],
    limit: u64,
    bound: Duration,
    mut after_each: impl FnMut(FileRole),
) -> Result<Vec<Zeroizing<Vec<u8>>>, Error> {
    let started = Instant::now();
    let mut pause = Duration::ZERO;
    loop {
        // Only a failed read looks at these: a file that could not be
        // opened has no handle to hold.
        let before = identities(files);
        let mut held = Vec::new();
        let read = read_once(files, limit, &mut held, &mut after_each);
        let settled = held.iter().all(|(path, file)| still_names(path, file))
            && (read.is_ok() || identities(files) == before);
        if settled {
            return read;
        }
        drop(held);
        if started.elapsed() >= bound {
            return Err(Error::KeptChanging {
                paths: files.iter().map(|(_, p)| p.to_path_buf()).collect(),
                waited: bound,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).max(Duration::from_millis(1)).min(MAX_PAUSE);
    }
}

fn read_once<'a>(
    files: &[(FileRole, &'a Path)],
    limit: u64,
    held: &mut Vec<(&'a Path, File)>,
    after_each: &mut impl FnMut(FileRole),
) -> Result<Vec<Zeroizing<Vec<u8>>>, Error> {
    files
        .iter()
        .map(|&(role, path)| {
            let (bytes, file) = read_capped(role, path, limit)?;
            held.push((path, file));
            after_each(role);
            Ok(Zeroizing::new(bytes))
        })
        .collect()
}

/// [`read_set`] with the usual bound.
pub(crate) fn read_files(
    files: &[(FileRole, &Path)],
    limit: u64,
) -> Result<Vec<Zeroizing<Vec<u8>>>, Error> {
    read_set(files, limit, SETTLE_BOUND, |_| {})
}

pub(crate) fn absorb(ctx: &mut ring::digest::Context, tag: &[u8], bytes: Option<&[u8]>) {
    // Length-prefix every part so that moving bytes between files changes
    // the digest.
    ctx.update(&(tag.len() as u64).to_be_bytes());
    ctx.update(tag);
    match bytes {
        Some(b) => {
            ctx.update(&[1]);
            ctx.update(&(b.len() as u64).to_be_bytes());
            ctx.update(b);
        }
        None => ctx.update(&[0]),
    }
}

pub(crate) fn digest_of(ctx: ring::digest::Context) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Digest of an arbitrary message, used to recognise repeated failures.
pub(crate) fn digest_str(s: &str) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(s.as_bytes());
    digest_of(ctx)
}

/// Device and inode of the file each input path names now (symlinks
/// followed), `None` where there is none.
fn identities(files: &[(FileRole, &Path)]) -> Vec<Option<(u64, u64)>> {
    files.iter().map(|(_, p)| identity(p)).collect()
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `path` still resolves to the open `file`. While `file` is open
/// its inode number cannot be given to another file, so equal numbers mean
/// the same file.
fn still_names(path: &Path, file: &File) -> bool {
    match (file.metadata(), identity(path)) {
        (Ok(held), Some(now)) => (held.dev(), held.ino()) == now,
        _ => false,
    }
}

/// Reads a whole file, refusing anything that is not a regular file and
/// anything over `limit` bytes. The file is returned still open.
fn read_capped(role: FileRole, path: &Path, limit: u64) -> Result<(Vec<u8>, File), Error> {
    let read_err = |error| Error::Read {
        role,
        path: path.to_owned(),
        error,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise block until a
    // writer appears, stalling the reload task forever. It has no effect on
    // regular files.
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_block_device() || ft.is_char_device() {
            FileKind::Device
        } else {
            FileKind::Other
        };
        return Err(Error::NotAFile {
            role,
            path: path.to_owned(),
            kind,
        });
    }
    let too_large = || Error::TooLarge {
        role,
        path: path.to_owned(),
        limit,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    // Sized up front so the buffer is not reallocated (and copies of a key
    // left behind) while reading.
    let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut buf = Vec::with_capacity(capacity);
    (&file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > limit {
        return Err(too_large());
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Empty {
            role,
            path: path.to_owned(),
        });
    }
    Ok((buf, file))
}

/// Everything parsed from [`Inputs`], ready to become a server config.
pub(crate) struct Parsed {
    pub(crate) certified_key: Arc<CertifiedKey>,
    pub(crate) cert: CertInfo,
    pub(crate) client_ca: Vec<CertInfo>,
    pub(crate) verifier: Option<Arc<dyn ClientCertVerifier>>,
    pub(crate) client_trust: Option<crate::trust::ClientTrust>,
}

impl Parsed {
    /// Parses and cross-checks the inputs: PEM syntax, X.509, one supported
    /// key that matches the leaf, a usable client verifier.
    pub(crate) fn parse(
        files: &TlsFiles,
        inputs: &Inputs,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, Error> {
        let (certified_key, cert) = parse_pair(&files.cert, &inputs.cert, &files.key, &inputs.key)?;

        let (client_ca, verifier, client_trust) = match (&files.client_ca, &inputs.client_ca) {
            (Some(path), Some(bytes)) => {
                let (infos, trust) = client_verifier(files, path, bytes, inputs, provider)?;
                (infos, Some(trust.verifier().clone()), Some(trust))
            }
            _ => (Vec::new(), None, None),
        };
        Ok(Self {
            certified_key,
            cert,
            client_ca,
            verifier,
            client_trust,
        })
    }
}

/// Parses a certificate chain (leaf first) and its private key, and
/// checks that the key belongs to the leaf.
pub(crate) fn parse_pair(
    cert_path: &Path,
    cert_bytes: &[u8],
    key_path: &Path,
    key_bytes: &[u8],
) -> Result<(Arc<CertifiedKey>, CertInfo), Error> {
    let chain = parse_chain(FileRole::Certificate, cert_path, cert_bytes)?;
    let cert = leaf_info(FileRole::Certificate, cert_path, &chain)?;
    let key = parse_key(key_path, key_bytes)?;
    let certified_key = CertifiedKey::new(chain, key);
    if certified_key.keys_match().is_err() {
        return Err(Error::KeyMismatch {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        });
    }
    Ok((Arc::new(certified_key), cert))
}

/// Builds a server config that verifies clients with `verifier` (none: no
/// client authentication) and selects certificates with `resolver`,
/// reusing `resumption` so that clients can resume sessions made under the
/// previous config.
pub(crate) fn server_config(
    provider: &Arc<CryptoProvider>,
    options: &LoadOptions,
    verifier: Option<&Arc<dyn ClientCertVerifier>>,
    resolver: Arc<dyn ResolvesServerCert>,
    resumption: Resumption,
) -> Result<ServerConfig, Error> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = options.alpn.clone();
    config.session_storage = resumption.storage;
    config.ticketer = resumption.ticketer;
    Ok(config)
}

/// The session cache and ticket keys of a config: shared between configs
/// that trust the same clients, fresh when trust changes.
pub(crate) struct Resumption {
    storage: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl Resumption {
    pub(crate) fn fresh(cache_size: usize) -> Result<Self, Error> {
        Ok(Self {
            storage: ServerSessionMemoryCache::new(cache_size),
            ticketer: rustls::crypto::ring::Ticketer::new()?,
        })
    }

    pub(crate) fn of(config: &ServerConfig) -> Self {
        Self {
            storage: config.session_storage.clone(),
            ticketer: config.ticketer.clone(),
        }
    }
}

/// One decoded PEM section; the DER is zeroed on drop as it may be a key.
type Section = (SectionKind, Zeroizing<Vec<u8>>);

fn pem_sections(role: FileRole, path: &Path, bytes: &[u8]) -> Result<Vec<Section>, Error> {
    SliceIter::<(SectionKind, Vec<u8>)>::new(bytes)
        .map(|item| {
            item.map(|(kind, der)| (kind, Zeroizing::new(der)))
                .map_err(|e| Error::MalformedPem {
                    role,
                    path: path.to_owned(),
                    cause: pem_error(&e),
                })
        })
        .collect()
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> PemError {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => {
            // A label never contains a dash (RFC 7468): from the first one
            // on, this is what followed the BEGIN line's closing dashes on
            // the same line (with lost line breaks, the whole key) and is
            // not quoted.
            match end_marker.iter().position(|&b| b == b'-') {
                None => PemError::MissingEnd {
                    label: quoted(end_marker),
                },
                Some(end) => PemError::TextAfterBegin {
                    label: quoted(&end_marker[..end]),
                },
            }
        }
        E::IllegalSectionStart { line } => {
            // Only the label is quoted: what follows it on the line may be
            // key material (a key whose first line break was lost).
            let rest = line.get(b"-----BEGIN ".len()..).unwrap_or_default();
            match rest.iter().position(|&b| b == b'-') {
                Some(end) => PemError::BeginNotClosed {
                    label: quoted(&rest[..end]),
                },
                None => PemError::BeginWithoutDashes,
            }
        }
        E::Base64Decode(_) => PemError::Base64,
        other => PemError::Other(other.to_string()),
    }
}

/// Text from a file, for an error message: at most 64 bytes, control
/// characters escaped, so that the message stays one printable line.
fn quoted(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
        .escape_debug()
        .collect()
}

fn no_pem(role: FileRole, path: &Path, bytes: &[u8], expected: &'static str) -> Error {
    // A DER file starts with a SEQUENCE tag; say so, it is a common mistake.
    if bytes.first() == Some(&0x30) && !bytes.windows(10).any(|w| w == b"-----BEGIN") {
        return Error::MalformedPem {
            role,
            path: path.to_owned(),
            cause: PemError::Der { expected },
        };
    }
    Error::NoPemItem {
        role,
        path: path.to_owned(),
        expected,
    }
}

pub(crate) fn parse_chain(
    role: FileRole,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let chain: Vec<CertificateDer<'static>> = pem_sections(role, path, bytes)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.to_vec()))
        .collect();
    if chain.is_empty() {
        return Err(no_pem(role, path, bytes, "CERTIFICATE"));
    }
    Ok(chain)
}

fn leaf_info(
    role: FileRole,
    path: &Path,
    chain: &[CertificateDer<'static>],
) -> Result<CertInfo, Error> {
    let infos = cert_infos(role, path, chain)?;
    infos.into_iter().next().ok_or_else(|| Error::NoPemItem {
        role,
        path: path.to_owned(),
        expected: "CERTIFICATE",
    })
}

pub(crate) fn cert_infos(
    role: FileRole,
    path: &Path,
    chain: &[CertificateDer<'static>],
) -> Result<Vec<CertInfo>, Error> {
    chain
        .iter()
        .enumerate()
        .map(|(index, der)| {
            CertInfo::from_der(der).map_err(|cause| Error::InvalidCertificate {
                role,
                path: path.to_owned(),
                index,
                cause: CertError::Malformed(cause),
            })
        })
        .collect()
}

/// Adds the CA certificates `cas`, read from `path`, to `roots`.
pub(crate) fn add_roots(
    roots: &mut RootCertStore,
    role: FileRole,
    path: &Path,
    cas: Vec<CertificateDer<'static>>,
) -> Result<(), Error> {
    for (index, der) in cas.into_iter().enumerate() {
        roots.add(der).map_err(|e| Error::InvalidCertificate {
            role,
            path: path.to_owned(),
            index,
            cause: CertError::Unusable(e),
        })?;
    }
    Ok(())
}

/// PEM labels of private keys that the ring provider cannot use, with the
/// reason given to the operator.
const UNSUPPORTED_KEY_LABELS: &[(&[u8], KeyError)] = &[
    (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
        KeyError::Encrypted,
    ),
    (b"-----BEGIN DSA PRIVATE KEY-----", KeyError::Dsa),
    (b"-----BEGIN OPENSSH PRIVATE KEY-----", KeyError::OpenSsh),
];

fn parse_key(path: &Path, bytes: &[u8]) -> Result<Arc<dyn SigningKey>, Error> {
    if let Some((_, why)) = UNSUPPORTED_KEY_LABELS
        .iter()
        .find(|(label, _)| bytes.windows(label.len()).any(|w| w == *label))
    {
        return Err(Error::UnsupportedKey {
            path: path.to_owned(),
            cause: why.clone(),
        });
    }
    let mut keys: Vec<Section> = pem_sections(FileRole::PrivateKey, path, bytes)?
        .into_iter()
        .filter(|(kind, _)| {
            matches!(
                kind,
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
            )
        })
        .collect();
    let (kind, der) = match keys.len() {
        0 => return Err(no_pem(FileRole::PrivateKey, path, bytes, "PRIVATE KEY")),
        1 => keys.remove(0),
        count => {
            return Err(Error::MultipleKeys {
                path: path.to_owned(),
                count,
            });
        }
    };
    // Borrow the zeroizing buffer: the provider copies what it needs, and
    // no owned copy of the DER outlives this function.
    let key_der = match kind {
        SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(&der[..])),
        SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(&der[..])),
        _ => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(&der[..])),
    };
    rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| Error::UnsupportedKey {
        path: path.to_owned(),
        cause: KeyError::Rejected(e),
    })
}

fn client_verifier(
    files: &TlsFiles,
    ca_path: &Path,
    ca_bytes: &[u8],
    inputs: &Inputs,
    provider: &Arc<CryptoProvider>,
) -> Result<(Vec<CertInfo>, crate::trust::ClientTrust), Error> {
    let role = FileRole::ClientCa;
    let cas = parse_chain(role, ca_path, ca_bytes)?;
    let ca_ders = cas.clone();
    let infos = cert_infos(role, ca_path, &cas)?;
    let mut roots = RootCertStore::empty();
    add_roots(&mut roots, role, ca_path, cas)?;

    let roots = Arc::new(roots);
    let mut crls = Vec::new();
    let mut revoked = crate::trust::Revoked::default();
    for (path, bytes) in files.crls.iter().zip(&inputs.crls) {
        let found: Vec<_> = pem_sections(FileRole::Crl, path, bytes)?
            .into_iter()
            .filter(|(kind, _)| *kind == SectionKind::Crl)
            .collect();
        if found.is_empty() {
            return Err(no_pem(FileRole::Crl, path, bytes, "X509 CRL"));
        }
        for (index, (_, der)) in found.into_iter().enumerate() {
            use x509_parser::prelude::FromDer as _;
            let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(
                &der,
            )
            .map_err(|e| Error::InvalidCertificate {
                role: FileRole::Crl,
                path: path.clone(),
                index,
                cause: CertError::MalformedCrl(e.to_string()),
            })?;
            revoked.add(&parsed);
            crls.push((
                path,
                index,
                CertificateRevocationListDer::from(der.to_vec()),
            ));
        }
    }

    let crl_ders: Vec<_> = crls.iter().map(|(_, _, crl)| crl.clone()).collect();
    let build = |crls: Vec<CertificateRevocationListDer<'static>>| {
        let builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(crls);
        if files.client_auth == ClientAuth::Optional {
            builder.allow_unauthenticated().build()
        } else {
            builder.build()
        }
    };
    let verifier = build(crl_ders.clone()).map_err(|cause| {
        // rustls parses CRLs more strictly than x509-parser (trailing
        // data, CRL number, matching signature algorithms): when it refuses
        // the set, the CRL it refuses alone is named rather than the client
        // CA bundle.
        let rejected = crls.iter().find_map(|(path, index, crl)| {
            build(vec![crl.clone()])
                .err()
                .map(|e| Error::InvalidCertificate {
                    role: FileRole::Crl,
                    path: (*path).clone(),
                    index: *index,
                    cause: CertError::RejectedCrl(e),
                })
        });
        rejected.unwrap_or_else(|| Error::ClientVerifier {
            path: ca_path.to_owned(),
            cause,
        })
    })?;
    let trust = crate::trust::ClientTrust::new(
        files.client_auth,
        verifier,
        &ca_ders,
        &infos,
        &crl_ders,
        revoked,
        provider,
    );
    Ok((infos, trust))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A Secret volume laid out as kubelet leaves it, with two generations
    /// present at once: `..a` and `..b`, and `..data` naming one of them.
    struct Volume {
        dir: tempfile::TempDir,
    }

    impl Volume {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for generation in ["a", "b"] {
                let ts = dir.path().join(format!("..{generation}"));
                fs::create_dir(&ts).unwrap();
                fs::write(ts.join("tls.crt"), format!("cert-{generation}")).unwrap();
                fs::write(ts.join("tls.key"), format!("key-{generation}")).unwrap();
            }
            symlink("..a", dir.path().join("..data")).unwrap();
            for name in ["tls.crt", "tls.key"] {
                symlink(format!("..data/{name}"), dir.path().join(name)).unwrap();
            }
            Self { dir }
        }

        fn files(&self) -> TlsFiles {
            TlsFiles::new(
                self.dir.path().join("tls.crt"),
                self.dir.path().join("tls.key"),
            )
        }

        /// Kubelet's atomic switch: `..data_tmp -> ..<generation>`, renamed
        /// over `..data`.
        fn switch_to(&self, generation: &str) {
            let tmp = self.dir.path().join("..data_tmp");
            symlink(format!("..{generation}"), &tmp).unwrap();
            fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        }
    }

    /// A settled read of `volume`, calling `hook` after each file.
    fn read(volume: &Volume, hook: impl FnMut(FileRole)) -> Result<Inputs, Error> {
        Inputs::read_settled(&volume.files(), 1024, Duration::from_secs(5), hook)
    }

    fn pair(inputs: &Inputs) -> (String, String) {
        (
            String::from_utf8(inputs.cert.clone()).unwrap(),
            String::from_utf8(inputs.key.to_vec()).unwrap(),
        )
    }

    #[test]
    fn a_read_between_two_swaps_is_repeated_even_when_every_path_names_its_old_inode_again() {
        // The ABA case: the volume switches to `b` after the certificate is
        // read and back to `a` after the key is read. Each path then names
        // the same (device, inode) as before the read, as it does when the
        // file system reuses freed inode numbers, yet the key came from `b`.
        let volume = Volume::new();
        let mut swaps = 0;
        let inputs = read(&volume, |role| {
            if swaps < 2 {
                swaps += 1;
                volume.switch_to(if role == FileRole::Certificate {
                    "b"
                } else {
                    "a"
                });
            }
        })
        .unwrap();
        assert_eq!(swaps, 2, "the hook swapped the volume twice");
        assert_eq!(pair(&inputs), ("cert-a".into(), "key-a".into()));
    }

    #[test]
    fn a_read_that_straddles_one_swap_returns_the_new_generation_whole() {
        let volume = Volume::new();
        let mut swapped = false;
        let inputs = read(&volume, |_| {
            if !swapped {
                swapped = true;
                volume.switch_to("b");
            }
        })
        .unwrap();
        assert_eq!(pair(&inputs), ("cert-b".into(), "key-b".into()));
    }

    #[test]
    fn files_that_never_stop_changing_are_a_distinct_error_after_the_bound() {
        let volume = Volume::new();
        let mut next = ["b", "a"].into_iter().cycle();
        let bound = Duration::from_millis(100);
        let started = Instant::now();
        let err = Inputs::read_settled(&volume.files(), 1024, bound, |role| {
            if role == FileRole::Certificate {
                volume.switch_to(next.next().unwrap());
            }
        })
        .unwrap_err();
        assert!(started.elapsed() >= bound, "gave up before the bound");
        assert!(
            matches!(err, Error::KeptChanging { waited, .. } if waited == bound),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("tls.crt") && msg.contains("tls.key") && msg.contains("kept changing"),
            "{msg}"
        );
    }

    #[test]
    fn a_stable_read_is_read_once() {
        let volume = Volume::new();
        let mut reads = 0;
        let inputs = read(&volume, |_| reads += 1).unwrap();
        assert_eq!(reads, 2, "one read of each file");
        assert_eq!(pair(&inputs), ("cert-a".into(), "key-a".into()));
    }

    #[test]
    fn a_missing_file_is_reported_once_it_stays_missing() {
        let volume = Volume::new();
        fs::remove_file(volume.dir.path().join("..a/tls.key")).unwrap();
        let err = read(&volume, |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Read {
                    role: FileRole::PrivateKey,
                    ..
                }
            ),
            "{err}"
        );
    }
}
