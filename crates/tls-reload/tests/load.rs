//! Loading: every bad input is a distinct error naming the file and cause,
//! the validity rules for replacements, and what clients see of a config:
//! ALPN, client authentication, CRLs, and TLS 1.3 resumption across
//! rotations (but not across trust changes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use rustls::ClientConfig;
use rustls::HandshakeKind::{Full, Resumed};
use tls_reload::testing::{Leaf, LeafOptions, TestCa, client_config, handshake};
use tls_reload::{
    ClientAuth, Error, FileKind, FileRole, KeyError, PemError, ReloadOutcome, ReloadableAcceptor,
    TlsFiles, Trigger,
};

const DAY: Duration = Duration::from_secs(86_400);
/// A well-formed DER SEQUENCE that is no certificate, key or CRL.
const JUNK: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x00];

/// A directory with a CA and a valid pair (`tls.crt`, `tls.key`) in it.
struct Files {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ca: TestCa,
    valid: TlsFiles,
}

impl Files {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let ca = TestCa::new("ca");
        let leaf = ca.server();
        let valid = TlsFiles::new(dir.join("tls.crt"), dir.join("tls.key"));
        let f = Self {
            _tmp: tmp,
            dir,
            ca,
            valid,
        };
        f.publish(&leaf);
        f
    }
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, contents).unwrap();
        path
    }
    fn read(&self, path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }
    /// Replaces the pair behind `valid`, key first.
    fn publish(&self, leaf: &Leaf) {
        self.write("tls.key", &leaf.key_pem);
        self.write("tls.crt", &leaf.cert_pem);
    }
    fn acceptor(&self) -> ReloadableAcceptor {
        let builder = ReloadableAcceptor::builder(self.valid.clone());
        builder.build().unwrap()
    }
    fn leaf_valid(&self, from: SystemTime, to: SystemTime) -> Leaf {
        self.ca.issue(&LeafOptions::server().valid(from, to))
    }
    /// The valid certificate with `key`.
    fn with_key(&self, key: PathBuf) -> (TlsFiles, PathBuf) {
        (TlsFiles::new(self.valid.cert_path(), &key), key)
    }
    /// `cert` with the valid key.
    fn with_cert(&self, cert: PathBuf) -> (TlsFiles, PathBuf) {
        (TlsFiles::new(&cert, self.valid.key_path()), cert)
    }
    /// The valid pair, client certificates required from `ca`.
    fn with_client_ca(&self, ca: PathBuf) -> (TlsFiles, PathBuf) {
        let files = self.valid.clone().client_ca(&ca, ClientAuth::Required);
        (files, ca)
    }
}

fn pem(label: &str, der: impl Into<Vec<u8>>) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// One bad input: its name, the files to load and the file to blame, the
/// error variant, and text the message must contain.
type Case = (
    &'static str,
    fn(&Files) -> (TlsFiles, PathBuf),
    fn(&Error) -> bool,
    &'static str,
);

#[rustfmt::skip] // A table: one case a row.
const CASES: &[Case] = &[
    ("a missing file", |f| f.with_key(f.dir.join("nope.key")),
        |e| matches!(e, Error::Read { role: FileRole::PrivateKey, .. }), "No such file"),
    ("an empty file", |f| f.with_key(f.write("empty.key", "")),
        |e| matches!(e, Error::Empty { role: FileRole::PrivateKey, .. }), "is empty"),
    ("a whitespace-only file", |f| f.with_key(f.write("blank.key", " \n\t\n")),
        |e| matches!(e, Error::Empty { role: FileRole::PrivateKey, .. }), "is empty"),
    ("a file over the default 1 MiB cap", |f| f.with_cert(f.write("big.crt", vec![b'A'; 1024 * 1024 + 1])),
        |e| matches!(e, Error::TooLarge { limit: 1_048_576, .. }), "1048576-byte limit"),
    ("text without PEM blocks", |f| f.with_cert(f.write("notes.crt", "just some text\n")),
        |e| matches!(e, Error::NoPemItem { role: FileRole::Certificate, expected: "CERTIFICATE", .. }), "no CERTIFICATE PEM block"),
    ("certificate and key swapped", |f| (TlsFiles::new(f.valid.key_path(), f.valid.cert_path()), f.valid.key_path().into()),
        |e| matches!(e, Error::NoPemItem { role: FileRole::Certificate, .. }), "no CERTIFICATE PEM block"),
    ("DER instead of PEM", |f| f.with_cert(f.write("tls.der", f.ca.server().cert_der.as_ref())),
        |e| matches!(e, Error::MalformedPem { cause: PemError::Der { .. }, .. }), "DER"),
    ("a truncated certificate", |f| {
        let pem = f.read(f.valid.cert_path());
        f.with_cert(f.write("cut.crt", &pem[..pem.len() / 2]))
    }, |e| matches!(e, Error::MalformedPem { cause: PemError::MissingEnd { .. }, .. }), "END CERTIFICATE"),
    ("two keys in one file", |f| {
        let two = format!("{}{}", f.read(f.valid.key_path()), f.ca.server().key_pem);
        f.with_key(f.write("two.key", two))
    }, |e| matches!(e, Error::MultipleKeys { count: 2, .. }), "2 private keys"),
    ("an encrypted key", |f| f.with_key(f.write("enc.key", pem("ENCRYPTED PRIVATE KEY", b"\0"))),
        |e| matches!(e, Error::UnsupportedKey { cause: KeyError::Encrypted, .. }), "encrypted"),
    ("a DSA key", |f| f.with_key(f.write("dsa.key", pem("DSA PRIVATE KEY", b"\0"))),
        |e| matches!(e, Error::UnsupportedKey { cause: KeyError::Dsa, .. }), "DSA"),
    ("an OpenSSH key", |f| f.with_key(f.write("ssh.key", pem("OPENSSH PRIVATE KEY", b"\0"))),
        |e| matches!(e, Error::UnsupportedKey { cause: KeyError::OpenSsh, .. }), "OpenSSH"),
    ("a PKCS#8 section that ring cannot use", |f| f.with_key(f.write("junk.key", pem("PRIVATE KEY", JUNK))),
        |e| matches!(e, Error::UnsupportedKey { cause: KeyError::Rejected(_), .. }), "unsupported key"),
    ("a key of another certificate", |f| f.with_key(f.write("other.key", f.ca.server().key_pem)),
        |e| matches!(e, Error::KeyMismatch { .. }), "tls.crt"),
    ("a chain in the wrong order", |f| {
        let chain = format!("{}{}", f.ca.cert_pem(), f.read(f.valid.cert_path()));
        (TlsFiles::new(f.write("chain.crt", chain), f.valid.key_path()), f.valid.key_path().into())
    }, |e| matches!(e, Error::KeyMismatch { .. }), "does not match"),
    ("a directory", |f| f.with_cert(f.dir.clone()),
        |e| matches!(e, Error::NotAFile { kind: FileKind::Directory, .. }), "is a directory"),
    ("a CA bundle with one garbage certificate", |f| {
        let bundle = format!("{}{}", f.ca.cert_pem(), pem("CERTIFICATE", JUNK));
        f.with_client_ca(f.write("ca.crt", bundle))
    }, |e| matches!(e, Error::InvalidCertificate { role: FileRole::ClientCa, index: 1, .. }), "certificate #1"),
    // A key whose first line break was lost: the BEGIN line runs into
    // the base64, which for a SEC1 key starts with the private scalar.
    ("a BEGIN line run into the key", |f| {
        let joined = f.read(f.valid.key_path()).replacen("-----\n", "-----", 1);
        f.with_key(f.write("joined.key", joined))
    }, |e| matches!(e, Error::MalformedPem { .. }), "PRIVATE KEY"),
    // The label of an unterminated section is echoed: a vertical tab or
    // an escape sequence would break the line or drive a terminal.
    ("control characters in a label",
        |f| f.with_cert(f.write("odd.crt", "-----BEGIN \x0bCERT\x1b[2J-----\nMAMCAQA=\n")),
        |e| matches!(e, Error::MalformedPem { cause: PemError::MissingEnd { .. }, .. }),
        r"\u{b}CERT\u{1b}[2J"),
    // x509-parser reads the CRL and stops; rustls refuses the trailing
    // byte. The CRL file is to blame, not the valid client CA bundle.
    ("a CRL with a trailing byte", |f| {
        let clients = TestCa::new("clients");
        let mut der = pem::parse(clients.crl(&[])).unwrap().into_contents();
        der.push(0);
        let crl = f.write("clients.crl", pem("X509 CRL", der));
        let (files, _) = f.with_client_ca(f.write("client-ca.crt", clients.cert_pem()));
        (files.crl(&crl), crl)
    }, |e| matches!(e, Error::InvalidCertificate { role: FileRole::Crl, index: 0, .. }), "invalid CRL"),
];

#[test]
fn every_bad_input_is_its_own_error_naming_the_file_and_quoting_no_key() {
    for &(name, files, is, says) in CASES {
        let f = Files::new();
        let key_body = f.read(f.valid.key_path()).lines().nth(1).unwrap()[..12].to_owned();
        let (files, blamed) = files(&f);
        let err = ReloadableAcceptor::builder(files).build().unwrap_err();
        let text = err.to_string();
        assert!(is(&err) && text.contains(says), "{name}: {text}");
        let file = blamed.display().to_string();
        assert!(text.contains(&file), "{name}: {text}");
        assert_eq!(err.path(), Some(blamed.as_path()), "{name}");
        assert!(!text.chars().any(char::is_control), "{name}: {text:?}");
        assert!(!text.contains(&key_body), "{name}: key material in {text}");
    }
}

#[test]
fn the_size_cap_and_contradictory_settings_are_refused() {
    let f = Files::new();
    let capped = ReloadableAcceptor::builder(f.valid.clone()).max_file_size(64);
    let err = capped.build().unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 64, .. }), "{err}");
    assert_eq!(err.path(), Some(f.valid.cert_path()));

    let ca = f.write("ca.crt", f.ca.cert_pem());
    for files in [
        f.valid.clone().client_ca(&ca, ClientAuth::None),
        f.valid.clone().crl(&ca),
    ] {
        let err = ReloadableAcceptor::builder(files).build().unwrap_err();
        assert!(matches!(err, Error::Settings(_)), "{err}");
    }
}

#[tokio::test]
async fn a_fifo_is_refused_without_blocking() {
    let f = Files::new();
    let fifo = f.dir.join("fifo.crt");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success());
    let key = f.valid.key_path().to_owned();
    let build = tokio::task::spawn_blocking(move || {
        ReloadableAcceptor::builder(TlsFiles::new(&fifo, key)).build()
    });
    let built = tokio::time::timeout(Duration::from_secs(5), build).await;
    let err = built
        .expect("opening a FIFO must not block")
        .unwrap()
        .unwrap_err();
    let fifo = matches!(err, Error::NotAFile { kind, .. } if kind == FileKind::Fifo);
    assert!(fifo, "{err}");
}

#[test]
fn reports_what_the_leaf_says_and_no_key_material() {
    let f = Files::new();
    let leaf = f.ca.server();
    f.publish(&leaf);
    let acceptor = f.acceptor();
    let status = acceptor.status();
    let cert = &status.cert;
    assert_eq!(status.generation, 1);
    assert_eq!(cert.fingerprint_sha256, leaf.fingerprint);
    assert_eq!(cert.dns_names, ["localhost"]);
    assert_eq!(cert.ip_addresses.len(), 2, "127.0.0.1 and ::1");
    assert!(cert.subject.contains("CN=localhost"), "{}", cert.subject);
    assert!(cert.issuer.contains("CN=ca"), "{}", cert.issuer);
    let serial_hex: String = leaf.serial.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(cert.serial, serial_hex);
    assert!(cert.not_before < SystemTime::now());
    assert!(cert.remaining_at(SystemTime::now()) > Duration::from_secs(80 * 86_400));

    let debug = format!("{acceptor:?} {status:?}");
    let key_body = leaf.key_pem.lines().nth(1).unwrap();
    assert!(!debug.contains(key_body), "key bytes leaked: {debug}");
    assert!(debug.contains("fingerprint"));
}

#[test]
fn text_before_a_begin_line_and_after_an_end_line_is_ignored() {
    // What `openssl pkcs12` exports and hand-joined bundles carry.
    let f = Files::new();
    let leaf = f.ca.server();
    let (before, after) = (
        "Bag Attributes\n    localKeyID: 01 02\n",
        "text after END\n",
    );
    f.write("tls.crt", format!("{before}{}{after}", leaf.cert_pem));
    f.write("tls.key", format!("{before}{}{after}", leaf.key_pem));
    let served = f.acceptor().status().cert.fingerprint_sha256;
    assert_eq!(served, leaf.fingerprint);
}

#[tokio::test]
async fn a_replacement_must_be_valid_now_unless_the_served_leaf_has_expired() {
    let (now, epoch) = (SystemTime::now(), SystemTime::UNIX_EPOCH);
    let valid = (now - DAY, now + 90 * DAY);
    let expired = (now - 10 * DAY, now - DAY);
    // (served, replacement, accepted, what the refusal says)
    #[rustfmt::skip] // A table: one case a row.
    let cases = [
        (valid, expired, false, "expired at"),
        // UTCTime years 50-69 are 1950-1969: refused, without panicking
        // the reload (and with it the watcher or the SIGHUP handler).
        (valid, (epoch - 3650 * DAY, epoch - DAY), false, "expired at"),
        (valid, (now + 7 * DAY, now + 90 * DAY), false, "is not valid before"),
        // Two minutes ahead is clock skew, within the 5-minute default.
        (valid, (now + Duration::from_secs(120), now + 90 * DAY), true, ""),
        // An expired leaf is served at startup so that a renewal can heal;
        // meanwhile another expired one is no worse.
        (expired, (now - 5 * DAY, now - DAY), true, ""),
        (expired, valid, true, ""),
    ];
    for ((served_from, served_to), (from, to), accepted, says) in cases {
        let f = Files::new();
        f.publish(&f.leaf_valid(served_from, served_to));
        let acceptor = f.acceptor();
        let served = acceptor.status().cert.fingerprint_sha256;
        let next = f.leaf_valid(from, to);
        f.publish(&next);
        match acceptor.reload_now(Trigger::Manual).await {
            Ok(_) => assert!(accepted, "{from:?}..{to:?} was swapped in"),
            Err(failure) => {
                let error = &failure.error;
                assert!(!accepted, "{from:?}..{to:?} refused: {error}");
                let validity = matches!(error, Error::Expired { .. } | Error::NotYetValid { .. });
                assert!(validity && error.to_string().contains(says), "{error}");
            }
        }
        let now_served = acceptor.status().cert.fingerprint_sha256;
        assert_eq!(now_served == next.fingerprint, accepted);
        assert_eq!(now_served == served, !accepted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_refuses_strangers_and_revoked_clients_and_crls_rotate_like_the_ca() {
    let f = Files::new();
    let clients = TestCa::new("clients");
    let (alice, bob) = (clients.client("alice"), clients.client("bob"));
    let stranger = TestCa::new("strangers").client("mallory");
    let ca = f.write("client-ca.crt", clients.cert_pem());
    let crl = f.write("clients.crl", clients.crl(&[]));
    let files = f.valid.clone().client_ca(&ca, ClientAuth::Optional);
    let acceptor = ReloadableAcceptor::builder(files.crl(&crl))
        .build()
        .unwrap();
    let addr = listen(&acceptor).await;
    // Whether each of: no certificate, alice, bob, a stranger, is accepted.
    let accepted = || async {
        let mut seen = Vec::new();
        for identity in [None, Some(&alice), Some(&bob), Some(&stranger)] {
            let config = client_config(f.ca.cert_pem(), identity);
            seen.push(handshake(addr, config).await.is_ok());
        }
        seen
    };
    assert_eq!(accepted().await, [true, true, true, false]);

    f.write("clients.crl", clients.crl(&[&bob]));
    let Ok(ReloadOutcome::Reloaded(reloaded)) = acceptor.reload_now(Trigger::Manual).await else {
        panic!("a new CRL is a reload");
    };
    assert!(reloaded.trust_changed);
    assert_eq!(accepted().await, [true, true, false, false], "bob revoked");

    // A broken CRL is refused, naming it; the last good one stays.
    f.write("clients.crl", pem("X509 CRL", JUNK));
    let failure = acceptor.reload_now(Trigger::Manual).await.unwrap_err();
    let error = &failure.error;
    let refused = matches!(error, Error::InvalidCertificate { role, .. } if *role == FileRole::Crl);
    assert!(refused && error.path() == Some(crl.as_path()), "{error}");
    assert_eq!(accepted().await, [true, true, false, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_the_configured_alpn() {
    let f = Files::new();
    let acceptor = ReloadableAcceptor::builder(f.valid.clone())
        .alpn(["h2", "http/1.1"])
        .build()
        .unwrap();
    let addr = listen(&acceptor).await;
    let mut config = (*client_config(f.ca.cert_pem(), None)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let hs = handshake(addr, Arc::new(config)).await.unwrap();
    assert_eq!(hs.alpn.as_deref(), Some(b"http/1.1".as_slice()));
    assert_eq!(hs.reply, b"ok\n");
}

/// `config` with a session cache of its own.
fn resuming(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = (*config).clone();
    config.resumption = rustls::client::Resumption::in_memory_sessions(64);
    Arc::new(config)
}

/// Whether each of `n` handshakes in a row was full or resumed.
async fn kinds(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    n: usize,
) -> Vec<rustls::HandshakeKind> {
    let mut kinds = Vec::new();
    for _ in 0..n {
        kinds.push(handshake(addr, client.clone()).await.unwrap().kind.unwrap());
    }
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_across_a_certificate_only_rotation() {
    let mut fx = Fixture::new();
    let acceptor = fx.builder().build().unwrap();
    let addr = listen(&acceptor).await;
    let client = resuming(fx.client());
    assert_eq!(kinds(addr, &client, 2).await, [Full, Resumed], "at all");

    let new = fx.rotate();
    let reloaded = acceptor.reload_now(Trigger::Manual).await.unwrap();
    assert_eq!(reloaded.generation(), 2);
    assert_eq!(kinds(addr, &client, 1).await, [Resumed], "after");
    // A new client sees the new certificate.
    assert_eq!(served(addr, &fx.client()).await, new.fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_do_not_resume_after_the_client_ca_changes() {
    let fx = Fixture::new();
    let acceptor = fx.mtls_builder().build().unwrap();
    let addr = listen(&acceptor).await;
    let client = resuming(client_config(fx.server_ca.cert_pem(), Some(&fx.client)));
    assert_eq!(kinds(addr, &client, 2).await, [Full, Resumed]);

    // The client's CA stays trusted; only the bundle changes.
    let more_clients = TestCa::new("more clients");
    fx.publish_client_ca(format!(
        "{}{}",
        fx.client_ca.cert_pem(),
        more_clients.cert_pem()
    ));
    let outcome = acceptor.reload_now(Trigger::Manual).await.unwrap();
    assert!(matches!(outcome, ReloadOutcome::Reloaded(r) if r.trust_changed));
    // No resumption across a trust change; the new trust's sessions resume.
    assert_eq!(kinds(addr, &client, 2).await, [Full, Resumed]);
}
