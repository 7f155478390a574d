//! Loading: every bad input is a distinct error naming the file and cause,
//! and the validity rules for replacements.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use tls_reload::testing::{LeafOptions, TestCa, client_config, handshake};
use tls_reload::{ClientAuth, Error, FileKind, FileRole, ReloadableAcceptor, TlsFiles, Trigger};

struct Files {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ca: TestCa,
}

impl Files {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        Self {
            _tmp: tmp,
            dir,
            ca: TestCa::new("ca"),
        }
    }
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, contents).unwrap();
        path
    }
    /// Writes a valid pair and returns the files.
    fn valid(&self) -> TlsFiles {
        let leaf = self.ca.server();
        TlsFiles::new(
            self.write("tls.crt", &leaf.cert_pem),
            self.write("tls.key", &leaf.key_pem),
        )
    }
    fn build_err(&self, files: TlsFiles) -> Error {
        ReloadableAcceptor::builder(files).build().unwrap_err()
    }
}

fn assert_names(err: &Error, path: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "{text:?} should name {path:?}"
    );
    assert!(!text.contains('\n'), "one line: {text:?}");
    assert_eq!(err.path(), Some(path));
}

#[test]
fn missing_file_names_path_and_os_error() {
    let f = Files::new();
    let files = f.valid();
    let missing = f.dir.join("nope.key");
    let err = f.build_err(TlsFiles::new(files.cert_path(), &missing));
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
    assert_names(&err, &missing);
    assert!(err.to_string().contains("No such file"), "{err}");
}

#[test]
fn empty_and_whitespace_only_files_are_empty() {
    let f = Files::new();
    let files = f.valid();
    for contents in ["", " \n\t\n"] {
        let key = f.write("empty.key", contents);
        let err = f.build_err(TlsFiles::new(files.cert_path(), &key));
        assert!(
            matches!(
                err,
                Error::Empty {
                    role: FileRole::PrivateKey,
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, &key);
    }
}

#[test]
fn files_over_the_size_cap_are_refused() {
    let f = Files::new();
    let files = f.valid();
    let err = ReloadableAcceptor::builder(files.clone())
        .max_file_size(64)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 64, .. }), "{err}");
    assert_names(&err, files.cert_path());

    let big = f.write("big.crt", vec![b'A'; 1024 * 1024 + 1]);
    let err = f.build_err(TlsFiles::new(&big, files.key_path()));
    assert!(
        matches!(
            err,
            Error::TooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "default cap is 1 MiB: {err}"
    );
}

#[test]
fn text_without_pem_blocks_is_reported_per_role() {
    let f = Files::new();
    let files = f.valid();
    let cert = f.write("notes.crt", "just some text\n");
    let err = f.build_err(TlsFiles::new(&cert, files.key_path()));
    assert!(
        matches!(
            err,
            Error::NoPemItem {
                role: FileRole::Certificate,
                expected: "CERTIFICATE",
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &cert);
}

#[test]
fn swapped_cert_and_key_are_reported_as_missing_blocks() {
    let f = Files::new();
    let files = f.valid();
    let err = f.build_err(TlsFiles::new(files.key_path(), files.cert_path()));
    assert!(
        matches!(
            err,
            Error::NoPemItem {
                role: FileRole::Certificate,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, files.key_path());
}

#[test]
fn der_instead_of_pem_says_so() {
    let f = Files::new();
    let files = f.valid();
    let der = f.write("tls.der", f.ca.server().cert_der.as_ref());
    let err = f.build_err(TlsFiles::new(&der, files.key_path()));
    assert!(matches!(err, Error::MalformedPem { .. }), "{err}");
    assert!(err.to_string().contains("DER"), "{err}");
}

#[test]
fn truncated_pem_is_malformed() {
    let f = Files::new();
    let files = f.valid();
    let pem = fs::read_to_string(files.cert_path()).unwrap();
    let cert = f.write("cut.crt", &pem[..pem.len() / 2]);
    let err = f.build_err(TlsFiles::new(&cert, files.key_path()));
    assert!(matches!(err, Error::MalformedPem { .. }), "{err}");
    assert!(err.to_string().contains("END CERTIFICATE"), "{err}");
}

#[test]
fn two_keys_in_one_file_are_refused() {
    let f = Files::new();
    let files = f.valid();
    let pem = fs::read_to_string(files.key_path()).unwrap();
    let other = f.ca.server().key_pem;
    let key = f.write("two.key", format!("{pem}{other}"));
    let err = f.build_err(TlsFiles::new(files.cert_path(), &key));
    assert!(matches!(err, Error::MultipleKeys { count: 2, .. }), "{err}");
    assert_names(&err, &key);
}

#[test]
fn encrypted_and_foreign_keys_are_unsupported_with_a_hint() {
    let f = Files::new();
    let files = f.valid();
    for (label, hint) in [
        ("ENCRYPTED PRIVATE KEY", "encrypted"),
        ("DSA PRIVATE KEY", "DSA"),
        ("OPENSSH PRIVATE KEY", "OpenSSH"),
    ] {
        let key = f.write(
            "odd.key",
            format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n"),
        );
        let err = f.build_err(TlsFiles::new(files.cert_path(), &key));
        assert!(matches!(err, Error::UnsupportedKey { .. }), "{err}");
        assert!(err.to_string().contains(hint), "{err}");
        assert_names(&err, &key);
    }
}

#[test]
fn a_key_ring_cannot_use_is_unsupported() {
    let f = Files::new();
    let files = f.valid();
    // A well-formed PKCS#8 section whose contents are not a key.
    let key = f.write(
        "junk.key",
        "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n",
    );
    let err = f.build_err(TlsFiles::new(files.cert_path(), &key));
    assert!(matches!(err, Error::UnsupportedKey { .. }), "{err}");
}

#[test]
fn mismatched_pair_is_refused_at_startup() {
    let f = Files::new();
    let files = f.valid();
    let other = f.write("other.key", f.ca.server().key_pem);
    let err = f.build_err(TlsFiles::new(files.cert_path(), &other));
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert_names(&err, &other);
    assert!(
        err.to_string()
            .contains(&files.cert_path().display().to_string())
    );
}

#[test]
fn chain_in_wrong_order_is_a_mismatch() {
    let f = Files::new();
    let leaf = f.ca.server();
    let cert = f.write("chain.crt", format!("{}{}", f.ca.cert_pem(), leaf.cert_pem));
    let key = f.write("chain.key", &leaf.key_pem);
    let err = f.build_err(TlsFiles::new(&cert, &key));
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
}

#[tokio::test]
async fn a_fifo_is_refused_without_blocking() {
    let f = Files::new();
    let files = f.valid();
    let fifo = f.dir.join("fifo.crt");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let build = tokio::task::spawn_blocking(move || {
        ReloadableAcceptor::builder(TlsFiles::new(&fifo, files.key_path())).build()
    });
    let err = tokio::time::timeout(Duration::from_secs(5), build)
        .await
        .expect("opening a FIFO must not block")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotAFile {
                kind: FileKind::Fifo,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_directory_is_not_a_file() {
    let f = Files::new();
    let files = f.valid();
    let err = f.build_err(TlsFiles::new(&f.dir, files.key_path()));
    assert!(
        matches!(
            err,
            Error::NotAFile {
                kind: FileKind::Directory,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &f.dir);
}

#[test]
fn contradictory_client_auth_settings_are_refused() {
    let f = Files::new();
    let files = f.valid();
    let ca = f.write("ca.crt", f.ca.cert_pem());
    let cases = [
        files.clone().client_ca(&ca, ClientAuth::None),
        TlsFiles::new(files.cert_path(), files.key_path()).crl(&ca),
    ];
    for files in cases {
        assert!(matches!(f.build_err(files), Error::Settings(_)));
    }
}

#[test]
fn a_ca_bundle_with_one_garbage_cert_is_refused() {
    let f = Files::new();
    let files = f.valid();
    let bundle = f.write(
        "ca.crt",
        format!(
            "{}-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
            f.ca.cert_pem()
        ),
    );
    let err = f.build_err(files.client_ca(&bundle, ClientAuth::Required));
    assert!(
        matches!(
            err,
            Error::InvalidCertificate {
                role: FileRole::ClientCa,
                index: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &bundle);
}

#[test]
fn reports_what_the_leaf_says() {
    let f = Files::new();
    let leaf = f.ca.server();
    let files = TlsFiles::new(
        f.write("a.crt", &leaf.cert_pem),
        f.write("a.key", &leaf.key_pem),
    );
    let acceptor = ReloadableAcceptor::builder(files).build().unwrap();
    let status = acceptor.status();
    assert_eq!(status.generation, 1);
    assert_eq!(status.cert.fingerprint_sha256, leaf.fingerprint);
    assert_eq!(status.cert.dns_names, vec!["localhost".to_owned()]);
    assert_eq!(status.cert.ip_addresses.len(), 2, "127.0.0.1 and ::1");
    assert!(
        status.cert.subject.contains("CN=localhost"),
        "{}",
        status.cert.subject
    );
    assert!(
        status.cert.issuer.contains("CN=ca"),
        "{}",
        status.cert.issuer
    );
    let serial_hex: String = leaf.serial.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(status.cert.serial, serial_hex);
    assert!(status.cert.not_before < SystemTime::now());
    assert!(status.cert.remaining_at(SystemTime::now()) > Duration::from_secs(80 * 86_400));
}

fn leaf_valid(ca: &TestCa, from: SystemTime, to: SystemTime) -> tls_reload::testing::Leaf {
    ca.issue(&LeafOptions::server().valid(from, to))
}

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test]
async fn loads_an_expired_leaf_at_startup_so_a_renewal_can_heal() {
    let f = Files::new();
    let now = SystemTime::now();
    let expired = leaf_valid(&f.ca, now - 10 * DAY, now - DAY);
    let cert = f.write("tls.crt", &expired.cert_pem);
    let key = f.write("tls.key", &expired.key_pem);
    let acceptor = ReloadableAcceptor::builder(TlsFiles::new(&cert, &key))
        .build()
        .unwrap();
    assert!(acceptor.status().cert.is_expired_at(now));

    // Another expired one is no worse than what is served: accepted.
    let also_expired = leaf_valid(&f.ca, now - 5 * DAY, now - DAY);
    f.write("tls.key", &also_expired.key_pem);
    f.write("tls.crt", &also_expired.cert_pem);
    assert_eq!(
        acceptor
            .reload_now(Trigger::Manual)
            .await
            .unwrap()
            .generation(),
        2
    );

    let renewed = f.ca.server();
    f.write("tls.key", &renewed.key_pem);
    f.write("tls.crt", &renewed.cert_pem);
    acceptor.reload_now(Trigger::Manual).await.unwrap();
    assert_eq!(
        acceptor.status().cert.fingerprint_sha256,
        renewed.fingerprint
    );
}

#[tokio::test]
async fn refuses_an_expired_replacement_while_the_served_cert_is_valid() {
    let f = Files::new();
    let files = f.valid();
    let acceptor = ReloadableAcceptor::builder(files.clone()).build().unwrap();
    let served = acceptor.status().cert.fingerprint_sha256;
    let now = SystemTime::now();
    let expired = leaf_valid(&f.ca, now - 10 * DAY, now - DAY);
    f.write("tls.key", &expired.key_pem);
    f.write("tls.crt", &expired.cert_pem);
    let failure = acceptor.reload_now(Trigger::Manual).await.unwrap_err();
    assert!(
        matches!(failure.error, Error::Expired { .. }),
        "{}",
        failure.error
    );
    assert!(
        failure.error.to_string().contains("expired at"),
        "{}",
        failure.error
    );
    assert_eq!(acceptor.status().cert.fingerprint_sha256, served);
}

#[tokio::test]
async fn refuses_a_replacement_valid_only_from_next_week_but_tolerates_skew() {
    let f = Files::new();
    let files = f.valid();
    let acceptor = ReloadableAcceptor::builder(files).build().unwrap();
    let now = SystemTime::now();

    let future = leaf_valid(&f.ca, now + 7 * DAY, now + 90 * DAY);
    f.write("tls.key", &future.key_pem);
    f.write("tls.crt", &future.cert_pem);
    let failure = acceptor.reload_now(Trigger::Manual).await.unwrap_err();
    assert!(
        matches!(failure.error, Error::NotYetValid { .. }),
        "{}",
        failure.error
    );

    // Two minutes ahead is clock skew, within the 5-minute default.
    let skewed = leaf_valid(&f.ca, now + Duration::from_secs(120), now + 90 * DAY);
    f.write("tls.key", &skewed.key_pem);
    f.write("tls.crt", &skewed.cert_pem);
    acceptor.reload_now(Trigger::Manual).await.unwrap();
    assert_eq!(
        acceptor.status().cert.fingerprint_sha256,
        skewed.fingerprint
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_refuse_revoked_clients_and_rotate_like_the_ca() {
    let f = Files::new();
    let files = f.valid();
    let clients = TestCa::new("clients");
    let (alice, bob) = (clients.client("alice"), clients.client("bob"));
    let ca = f.write("client-ca.crt", clients.cert_pem());
    let crl = f.write("clients.crl", clients.crl(&[]));
    let acceptor =
        ReloadableAcceptor::builder(files.client_ca(&ca, ClientAuth::Required).crl(&crl))
            .build()
            .unwrap();
    let addr = listen(&acceptor).await;
    let as_alice = client_config(f.ca.cert_pem(), Some(&alice));
    let as_bob = client_config(f.ca.cert_pem(), Some(&bob));
    assert!(handshake(addr, as_alice.clone()).await.is_ok());
    assert!(handshake(addr, as_bob.clone()).await.is_ok());

    f.write("clients.crl", clients.crl(&[&bob]));
    let reloaded = match acceptor.reload_now(Trigger::Manual).await.unwrap() {
        tls_reload::ReloadOutcome::Reloaded(r) => r,
        other => panic!("expected a reload, got {other:?}"),
    };
    assert!(reloaded.trust_changed);
    assert!(handshake(addr, as_alice).await.is_ok());
    assert!(
        handshake(addr, as_bob).await.is_err(),
        "revoked client refused"
    );

    f.write(
        "clients.crl",
        "-----BEGIN X509 CRL-----\nMAMCAQA=\n-----END X509 CRL-----\n",
    );
    let failure = acceptor.reload_now(Trigger::Manual).await.unwrap_err();
    assert!(
        matches!(
            failure.error,
            Error::InvalidCertificate {
                role: FileRole::Crl,
                ..
            }
        ),
        "{}",
        failure.error
    );
    assert_eq!(failure.error.path(), Some(crl.as_path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_accepts_anonymous_and_verified_clients_only() {
    let f = Files::new();
    let files = f.valid();
    let clients = TestCa::new("clients");
    let stranger = TestCa::new("strangers").client("mallory");
    let ca = f.write("client-ca.crt", clients.cert_pem());
    let acceptor = ReloadableAcceptor::builder(files.client_ca(&ca, ClientAuth::Optional))
        .build()
        .unwrap();
    let addr = listen(&acceptor).await;
    assert!(
        handshake(addr, client_config(f.ca.cert_pem(), None))
            .await
            .is_ok()
    );
    let alice = clients.client("alice");
    assert!(
        handshake(addr, client_config(f.ca.cert_pem(), Some(&alice)))
            .await
            .is_ok()
    );
    assert!(
        handshake(addr, client_config(f.ca.cert_pem(), Some(&stranger)))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_the_configured_alpn() {
    let f = Files::new();
    let acceptor = ReloadableAcceptor::builder(f.valid())
        .alpn(["h2", "http/1.1"])
        .build()
        .unwrap();
    let addr = listen(&acceptor).await;
    let mut config = (*client_config(f.ca.cert_pem(), None)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let hs = handshake(addr, std::sync::Arc::new(config)).await.unwrap();
    assert_eq!(hs.alpn.as_deref(), Some(b"http/1.1".as_slice()));
    assert_eq!(hs.reply, b"ok\n");
}

#[test]
fn debug_output_of_an_acceptor_shows_no_key_material() {
    let f = Files::new();
    let files = f.valid();
    let key_pem = fs::read_to_string(files.key_path()).unwrap();
    let acceptor = ReloadableAcceptor::builder(files).build().unwrap();
    let debug = format!("{acceptor:?} {:?}", acceptor.status());
    let key_body: String = key_pem.lines().nth(1).unwrap().to_owned();
    assert!(!debug.contains(&key_body), "key bytes leaked: {debug}");
    assert!(debug.contains("fingerprint"));
}

#[test]
fn a_begin_line_run_into_the_key_quotes_none_of_the_key() {
    // A key whose first line break was lost: the BEGIN line runs into the
    // base64. With a SEC1 key (`EC PRIVATE KEY`) the start of that line is
    // the private scalar, so the error must not quote what follows the
    // label: it goes to logs and audit events.
    let f = Files::new();
    let files = f.valid();
    let pem = fs::read_to_string(files.key_path()).unwrap();
    let first_body_line = pem.lines().nth(1).unwrap().to_owned();
    let key = f.write("joined.key", pem.replacen("-----\n", "-----", 1));
    let err = f.build_err(TlsFiles::new(files.cert_path(), &key));
    assert!(matches!(err, Error::MalformedPem { .. }), "{err}");
    assert_names(&err, &key);
    let text = err.to_string();
    assert!(
        !text.contains(&first_body_line[..12]),
        "key material in {text:?}"
    );
    assert!(text.contains("PRIVATE KEY"), "names the label: {text}");
}

#[test]
fn control_characters_of_a_pem_label_are_escaped_in_the_error() {
    // The label of an unterminated section is echoed in the error; a
    // vertical tab or an escape sequence in it would break the one-line
    // error (or drive the terminal that shows the log).
    let f = Files::new();
    let files = f.valid();
    let cert = f.write("odd.crt", "-----BEGIN \x0bCERT\x1b[2J-----\nMAMCAQA=\n");
    let err = f.build_err(TlsFiles::new(&cert, files.key_path()));
    assert!(matches!(err, Error::MalformedPem { .. }), "{err}");
    assert_names(&err, &cert);
    let text = err.to_string();
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.contains(r"\u{b}CERT\u{1b}[2J"), "{text}");
}

#[tokio::test]
async fn an_expired_replacement_from_before_1970_is_refused_without_panicking() {
    // UTCTime years 50-69 are 1950-1969. Such a replacement is expired and
    // must be refused like any other, not panic the reload (and with it
    // the watcher task or the SIGHUP handler).
    let f = Files::new();
    let files = f.valid();
    let acceptor = ReloadableAcceptor::builder(files).build().unwrap();
    let served = acceptor.status().cert.fingerprint_sha256;
    let epoch = SystemTime::UNIX_EPOCH;
    let old = leaf_valid(&f.ca, epoch - 3650 * DAY, epoch - DAY);
    f.write("tls.key", &old.key_pem);
    f.write("tls.crt", &old.cert_pem);
    let failure = acceptor.reload_now(Trigger::Manual).await.unwrap_err();
    assert!(
        matches!(failure.error, Error::Expired { .. }),
        "{}",
        failure.error
    );
    assert!(failure.error.to_string().contains("expired at"));
    assert_eq!(acceptor.status().cert.fingerprint_sha256, served);
}

/// `der` as PEM under `label`.
fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut body = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            body.push(if i <= chunk.len() {
                char::from(B64[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[test]
fn a_crl_that_rustls_refuses_is_blamed_on_the_crl_file() {
    // A CRL followed by one stray byte: x509-parser reads the CRL and stops,
    // rustls refuses the trailing data. The error must name the CRL file,
    // not the (valid) client CA bundle.
    let f = Files::new();
    let files = f.valid();
    let clients = TestCa::new("clients");
    let ca = f.write("client-ca.crt", clients.cert_pem());
    let good = clients.crl(&[]);
    let mut der =
        rustls_pki_types::pem::SliceIter::<(rustls_pki_types::pem::SectionKind, Vec<u8>)>::new(
            good.as_bytes(),
        )
        .next()
        .unwrap()
        .unwrap()
        .1;
    der.push(0);
    let crl = f.write("clients.crl", pem("X509 CRL", &der));
    let err = f.build_err(files.client_ca(&ca, ClientAuth::Required).crl(&crl));
    assert!(
        matches!(
            err,
            Error::InvalidCertificate {
                role: FileRole::Crl,
                index: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &crl);
}
