//! Command line, environment and TOML configuration, resolved into one
//! [`Config`].
//!
//! Precedence: a flag, then its `OPENSHELL_*` environment variable, then the
//! TOML file given by `--config`, then the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use tls_reload::{ClientAuth, TlsFiles};

use crate::error::{Error, Result};

/// The OpenShell gateway: gRPC and HTTP on one TLS port, with certificates
/// reloaded from disk as they change.
#[derive(Debug, Parser, Default)]
#[command(name = "openshell-gateway", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with any of these settings (names as the flags, with
    /// underscores: `tls_cert = "/etc/tls/tls.crt"`).
    #[arg(long, env = "OPENSHELL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address of the TLS port serving gRPC and HTTP [default: 0.0.0.0:8080;
    /// 127.0.0.1:8080 with --dev].
    #[arg(long, env = "OPENSHELL_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,

    /// Server certificate chain, PEM, leaf first.
    #[arg(long, env = "OPENSHELL_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of the server certificate, PEM.
    #[arg(long, env = "OPENSHELL_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// CA bundle that client certificates must chain to, PEM.
    #[arg(long, env = "OPENSHELL_TLS_CLIENT_CA", value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,

    /// Client certificate policy [default: required with a client CA, else
    /// none].
    #[arg(long, env = "OPENSHELL_TLS_CLIENT_AUTH", value_name = "MODE")]
    pub tls_client_auth: Option<ClientAuthArg>,

    /// Certificate revocation list for client certificates, PEM
    /// (repeatable; comma-separated in the environment variable).
    #[arg(
        long = "tls-crl",
        env = "OPENSHELL_TLS_CRL",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub tls_crl: Vec<PathBuf>,

    /// Serve plaintext instead of TLS (explicit opt-out; not for production).
    #[arg(long, env = "OPENSHELL_DISABLE_TLS")]
    pub disable_tls: bool,

    /// Quiet period after a file change before reloading [default: 1s].
    #[arg(long, env = "OPENSHELL_TLS_RELOAD_DEBOUNCE", value_name = "DURATION")]
    pub tls_reload_debounce: Option<humantime::Duration>,

    /// Interval of the safety-net poll of the TLS files [default: 30s].
    #[arg(long, env = "OPENSHELL_TLS_RELOAD_POLL", value_name = "DURATION")]
    pub tls_reload_poll: Option<humantime::Duration>,

    /// Do not watch the TLS files; reload only on SIGHUP or ReloadTls.
    #[arg(long, env = "OPENSHELL_NO_TLS_RELOAD")]
    pub no_tls_reload: bool,

    /// Plaintext address serving only /healthz and /readyz, for kubelet
    /// probes [default: none].
    #[arg(long, env = "OPENSHELL_HEALTH_BIND", value_name = "ADDR")]
    pub health_bind: Option<SocketAddr>,

    /// Log format [default: pretty].
    #[arg(long, env = "OPENSHELL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Where OCSF audit events go, one JSON object per line: `stderr` or a
    /// file path (appended) [default: stderr].
    #[arg(long, env = "OPENSHELL_OCSF_LOG", value_name = "stderr|PATH")]
    pub ocsf_log: Option<String>,

    /// Close HTTP/2 and HTTP/1 connections after this age (after a graceful
    /// GOAWAY), so long-lived clients re-handshake and see rotated
    /// certificates [default: 1h].
    #[arg(long, env = "OPENSHELL_MAX_CONNECTION_AGE", value_name = "DURATION")]
    pub max_connection_age: Option<humantime::Duration>,

    /// How long a connection past its max age may finish in-flight requests
    /// [default: 30s].
    #[arg(
        long,
        env = "OPENSHELL_MAX_CONNECTION_AGE_GRACE",
        value_name = "DURATION"
    )]
    pub max_connection_age_grace: Option<humantime::Duration>,

    /// A client must complete the TLS handshake, then send its first
    /// request (on both ports), and each HTTP/1 request's headers, within
    /// this time [default: 10s].
    #[arg(long, env = "OPENSHELL_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<humantime::Duration>,

    /// On SIGTERM, how long open connections may drain [default: 30s].
    /// Connections draining at shutdown get this, even when it is longer
    /// than the max-age grace.
    #[arg(long, env = "OPENSHELL_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<humantime::Duration>,

    /// On SIGTERM, first report not-ready and keep accepting for this long
    /// (while Kubernetes removes the pod from its endpoints), then drain
    /// [default: 0s].
    #[arg(long, env = "OPENSHELL_SHUTDOWN_DELAY", value_name = "DURATION")]
    pub shutdown_delay: Option<humantime::Duration>,

    /// Open connections allowed on the TLS port; further connections are
    /// closed at once and counted [default: 10000, or fewer so that the
    /// health port and the TLS files keep descriptors under the process's
    /// open-file limit].
    #[arg(long, env = "OPENSHELL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Open connections allowed on the health port [default: 64].
    #[arg(long, env = "OPENSHELL_HEALTH_MAX_CONNECTIONS", value_name = "N")]
    pub health_max_connections: Option<usize>,

    /// Zero-setup development mode: generate a CA, a localhost server
    /// certificate and a client certificate in the state directory (kept
    /// across runs) and serve with TLS and hot-reload on.
    #[arg(long, env = "OPENSHELL_DEV")]
    pub dev: bool,

    /// State directory for --dev [default: $XDG_STATE_HOME/openshell/dev, or
    /// ~/.local/state/openshell/dev].
    #[arg(long, env = "OPENSHELL_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Client certificate policy, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthArg {
    /// Do not ask for client certificates.
    None,
    /// Verify a client certificate when one is presented.
    Optional,
    /// Refuse clients without a verified certificate.
    Required,
}

impl From<ClientAuthArg> for ClientAuth {
    fn from(a: ClientAuthArg) -> Self {
        match a {
            ClientAuthArg::None => ClientAuth::None,
            ClientAuthArg::Optional => ClientAuth::Optional,
            ClientAuthArg::Required => ClientAuth::Required,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    bind: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_client_auth: Option<ClientAuthArg>,
    tls_crl: Vec<PathBuf>,
    disable_tls: bool,
    tls_reload_debounce: Option<String>,
    tls_reload_poll: Option<String>,
    no_tls_reload: bool,
    health_bind: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    ocsf_log: Option<String>,
    max_connection_age: Option<String>,
    max_connection_age_grace: Option<String>,
    handshake_timeout: Option<String>,
    shutdown_grace: Option<String>,
    shutdown_delay: Option<String>,
    max_connections: Option<usize>,
    health_max_connections: Option<usize>,
    dev: bool,
    state_dir: Option<PathBuf>,
}

/// Where OCSF events are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcsfTarget {
    /// Standard error, interleaved with logs (each line is one JSON object).
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

/// How the gateway serves TLS.
#[derive(Debug, Clone)]
pub enum TlsMode {
    /// Plaintext (`--disable-tls`).
    Disabled,
    /// TLS from files.
    Files {
        /// The files and client-auth policy.
        files: TlsFiles,
        /// Watch settings; `None` with `--no-tls-reload`.
        reload: Option<ReloadSettings>,
    },
}

/// Watcher timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Quiet period before a reload.
    pub debounce: Duration,
    /// Safety-net poll interval.
    pub poll: Duration,
}

/// The resolved configuration of one gateway.
#[derive(Debug, Clone)]
pub struct Config {
    /// The TLS (or plaintext) port.
    pub bind: SocketAddr,
    /// The plaintext health-only port.
    pub health_bind: Option<SocketAddr>,
    /// TLS settings.
    pub tls: TlsMode,
    /// Log format.
    pub log_format: LogFormat,
    /// OCSF audit destination.
    pub ocsf: OcsfTarget,
    /// Max connection age.
    pub max_connection_age: Duration,
    /// Grace after the max age.
    pub max_connection_age_grace: Duration,
    /// Handshake timeout.
    pub handshake_timeout: Duration,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Not-ready but still accepting, before the drain.
    pub shutdown_delay: Duration,
    /// Open connections allowed on the TLS port.
    pub max_connections: usize,
    /// Open connections allowed on the health port.
    pub health_max_connections: usize,
    /// Set in `--dev` mode: where the generated files are.
    pub dev_state_dir: Option<PathBuf>,
}

impl Config {
    /// A configuration serving TLS from `files` on `bind`, with defaults for
    /// everything else (for embedding and tests).
    pub fn with_tls(bind: SocketAddr, files: TlsFiles) -> Self {
        Self {
            bind,
            health_bind: None,
            tls: TlsMode::Files {
                files,
                reload: Some(ReloadSettings {
                    debounce: Duration::from_secs(1),
                    poll: Duration::from_secs(30),
                }),
            },
            log_format: LogFormat::Pretty,
            ocsf: OcsfTarget::Stderr,
            max_connection_age: Duration::from_secs(3600),
            max_connection_age_grace: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            health_max_connections: DEFAULT_HEALTH_MAX_CONNECTIONS,
            dev_state_dir: None,
        }
    }

    /// Resolves the command line, its environment variables and the TOML
    /// file. In `--dev` mode the certificate paths point into the state
    /// directory; [`run`](crate::run) creates the files.
    ///
    /// # Errors
    ///
    /// An unreadable or invalid TOML file, an invalid duration, or TLS
    /// enabled without a certificate and key.
    pub fn from_cli(cli: Cli) -> Result<Self> {
        let file = match &cli.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let dur = |flag: Option<humantime::Duration>,
                   toml: &Option<String>,
                   name: &str,
                   default: Duration|
         -> Result<Duration> {
            match (flag, toml) {
                (Some(d), _) => Ok(d.into()),
                (None, Some(s)) => humantime::parse_duration(s)
                    .map_err(|e| Error::Config(format!("{name} = {s:?}: {e}"))),
                (None, None) => Ok(default),
            }
        };
        let dev = cli.dev || file.dev;
        let disable_tls = cli.disable_tls || file.disable_tls;
        if dev && disable_tls {
            return Err(Error::Config(
                "--dev and --disable-tls exclude each other".into(),
            ));
        }
        let default_bind = if dev {
            "127.0.0.1:8080"
        } else {
            "0.0.0.0:8080"
        };
        let bind = cli
            .bind
            .or(file.bind)
            .map_or_else(|| default_bind.parse(), Ok)
            .map_err(|e| Error::Config(format!("bind address: {e}")))?;

        let mut cert = cli.tls_cert.or(file.tls_cert);
        let mut key = cli.tls_key.or(file.tls_key);
        let mut client_ca = cli.tls_client_ca.or(file.tls_client_ca);
        let mut client_auth = cli.tls_client_auth.or(file.tls_client_auth);
        let mut dev_state_dir = None;
        if dev {
            let dir = match cli.state_dir.or(file.state_dir) {
                Some(d) => d,
                None => crate::dev::default_state_dir()?,
            };
            // Generated in `run`, once logging is up.
            let generated = crate::dev::DevFiles::in_dir(&dir);
            cert.get_or_insert(generated.server_cert);
            key.get_or_insert(generated.server_key);
            if client_ca.is_none() {
                client_ca = Some(generated.ca_cert);
                // Optional: curl works without a client certificate, and
                // ReloadTls still demands one.
                client_auth.get_or_insert(ClientAuthArg::Optional);
            }
            dev_state_dir = Some(dir);
        }

        let crls: Vec<PathBuf> = if cli.tls_crl.is_empty() {
            file.tls_crl
        } else {
            cli.tls_crl
        };
        let tls = if disable_tls {
            TlsMode::Disabled
        } else {
            let (Some(cert), Some(key)) = (cert, key) else {
                return Err(Error::Config(
                    "TLS needs --tls-cert and --tls-key (or --dev for generated development \
                     certificates, or --disable-tls to serve plaintext)"
                        .into(),
                ));
            };
            let mut files = TlsFiles::new(cert, key);
            if let Some(ca) = client_ca {
                let mode = client_auth.unwrap_or(ClientAuthArg::Required);
                files = files.client_ca(ca, mode.into());
            } else if let Some(mode @ (ClientAuthArg::Optional | ClientAuthArg::Required)) =
                client_auth
            {
                return Err(Error::Config(format!(
                    "--tls-client-auth {} needs --tls-client-ca",
                    ClientAuth::from(mode)
                )));
            }
            for crl in crls {
                files = files.crl(crl);
            }
            let reload = if cli.no_tls_reload || file.no_tls_reload {
                None
            } else {
                Some(ReloadSettings {
                    debounce: dur(
                        cli.tls_reload_debounce,
                        &file.tls_reload_debounce,
                        "tls_reload_debounce",
                        Duration::from_secs(1),
                    )?,
                    poll: dur(
                        cli.tls_reload_poll,
                        &file.tls_reload_poll,
                        "tls_reload_poll",
                        Duration::from_secs(30),
                    )?,
                })
            };
            TlsMode::Files { files, reload }
        };

        let health_max_connections = positive(
            "health_max_connections",
            cli.health_max_connections
                .or(file.health_max_connections)
                .unwrap_or(DEFAULT_HEALTH_MAX_CONNECTIONS),
        )?;
        let ocsf = match cli.ocsf_log.or(file.ocsf_log).as_deref() {
            None | Some("stderr") | Some("-") => OcsfTarget::Stderr,
            Some(path) => OcsfTarget::File(PathBuf::from(path)),
        };
        Ok(Self {
            bind,
            health_bind: cli.health_bind.or(file.health_bind),
            tls,
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            ocsf,
            max_connection_age: bounded(
                "max_connection_age",
                dur(
                    cli.max_connection_age,
                    &file.max_connection_age,
                    "max_connection_age",
                    Duration::from_secs(3600),
                )?,
            )?,
            max_connection_age_grace: grace(
                "max_connection_age_grace",
                dur(
                    cli.max_connection_age_grace,
                    &file.max_connection_age_grace,
                    "max_connection_age_grace",
                    Duration::from_secs(30),
                )?,
            )?,
            handshake_timeout: bounded(
                "handshake_timeout",
                dur(
                    cli.handshake_timeout,
                    &file.handshake_timeout,
                    "handshake_timeout",
                    Duration::from_secs(10),
                )?,
            )?,
            shutdown_grace: grace(
                "shutdown_grace",
                dur(
                    cli.shutdown_grace,
                    &file.shutdown_grace,
                    "shutdown_grace",
                    Duration::from_secs(30),
                )?,
            )?,
            shutdown_delay: grace(
                "shutdown_delay",
                dur(
                    cli.shutdown_delay,
                    &file.shutdown_delay,
                    "shutdown_delay",
                    Duration::ZERO,
                )?,
            )?,
            max_connections: positive(
                "max_connections",
                cli.max_connections
                    .or(file.max_connections)
                    .unwrap_or_else(|| {
                        default_max_connections(open_file_limit(), health_max_connections)
                    }),
            )?,
            health_max_connections,
            dev_state_dir,
        })
    }
}

/// Default of `--max-connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of `--health-max-connections`: probes need a handful.
const DEFAULT_HEALTH_MAX_CONNECTIONS: usize = 64;

/// Descriptors kept free beyond the health port's cap: listeners, the TLS
/// files during a reload, the watcher, the audit file.
const RESERVED_DESCRIPTORS: u64 = 32;

/// The main port's default cap: 10000, or less when the open-file limit
/// would otherwise let a flood of connections starve the health port (and
/// with it the liveness probe) of descriptors.
fn default_max_connections(open_files: Option<u64>, health_max: usize) -> usize {
    let Some(limit) = open_files else {
        return DEFAULT_MAX_CONNECTIONS;
    };
    let room = limit.saturating_sub(health_max as u64 + RESERVED_DESCRIPTORS);
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(1, DEFAULT_MAX_CONNECTIONS)
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Largest connection cap accepted: far above what a process can hold open.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

fn positive(name: &str, n: usize) -> Result<usize> {
    if !(1..=MAX_CONNECTIONS_LIMIT).contains(&n) {
        return Err(Error::Config(format!(
            "{name} = {n}: expected 1 to {MAX_CONNECTIONS_LIMIT}"
        )));
    }
    Ok(n)
}

/// At most a year, so that deadlines computed from a duration cannot
/// overflow.
const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// Connection ages and timeouts: not zero (a zero max age would close every
/// connection at once), and at most a year.
fn bounded(name: &str, d: Duration) -> Result<Duration> {
    if d.is_zero() || d > YEAR {
        return Err(Error::Config(format!(
            "{name} = {}: expected more than 0 and at most 365 days",
            humantime::format_duration(d)
        )));
    }
    Ok(d)
}

/// Grace periods: zero (no grace) is allowed, more than a year is not.
fn grace(name: &str, d: Duration) -> Result<Duration> {
    if d > YEAR {
        return Err(Error::Config(format!(
            "{name} = {}: expected at most 365 days",
            humantime::format_duration(d)
        )));
    }
    Ok(d)
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| Error::Config(format!("config file {}: {}", path.display(), e.message())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config> {
        let mut argv = vec!["openshell-gateway"];
        argv.extend_from_slice(args);
        Config::from_cli(Cli::try_parse_from(argv).unwrap())
    }

    #[test]
    fn the_default_connection_cap_leaves_descriptors_for_the_health_port() {
        assert_eq!(default_max_connections(None, 64), 10_000);
        assert_eq!(default_max_connections(Some(1_048_576), 64), 10_000);
        assert_eq!(default_max_connections(Some(1024), 64), 1024 - 64 - 32);
        assert_eq!(default_max_connections(Some(128), 64), 32);
        assert_eq!(default_max_connections(Some(10), 64), 1);
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn connection_caps_come_from_flags_and_must_be_positive() {
        let cfg = parse(&[
            "--disable-tls",
            "--max-connections",
            "7",
            "--health-max-connections",
            "3",
            "--shutdown-delay",
            "5s",
        ])
        .unwrap();
        assert_eq!(cfg.max_connections, 7);
        assert_eq!(cfg.health_max_connections, 3);
        assert_eq!(cfg.shutdown_delay, Duration::from_secs(5));
        for bad in ["0", "1000001"] {
            let err = parse(&["--disable-tls", "--max-connections", bad]).unwrap_err();
            assert!(err.to_string().contains("max_connections"), "{err}");
        }
        for (flag, bad) in [
            ("--max-connection-age", "0s"),
            ("--handshake-timeout", "0s"),
            ("--max-connection-age", "1000years"),
        ] {
            let err = parse(&["--disable-tls", flag, bad]).unwrap_err();
            assert!(
                err.to_string().contains("expected more than 0"),
                "{flag} {bad}: {err}"
            );
        }
    }

    #[test]
    fn tls_without_files_is_an_error_that_says_what_to_do() {
        let err = parse(&[]).unwrap_err().to_string();
        assert!(err.contains("--tls-cert") && err.contains("--dev"), "{err}");
    }

    #[test]
    fn flags_override_the_toml_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("gateway.toml");
        std::fs::write(
            &toml,
            "tls_cert = \"/t/tls.crt\"\ntls_key = \"/t/tls.key\"\nbind = \"127.0.0.1:9000\"\n\
             tls_reload_debounce = \"250ms\"\nhealth_bind = \"127.0.0.1:9001\"\n",
        )
        .unwrap();
        let cfg = parse(&[
            "--config",
            toml.to_str().unwrap(),
            "--bind",
            "127.0.0.1:9100",
        ])
        .unwrap();
        assert_eq!(cfg.bind, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(cfg.health_bind, Some("127.0.0.1:9001".parse().unwrap()));
        assert_eq!(cfg.max_connection_age, Duration::from_secs(3600));
        match cfg.tls {
            TlsMode::Files {
                files,
                reload: Some(r),
            } => {
                assert_eq!(files.cert_path(), Path::new("/t/tls.crt"));
                assert_eq!(r.debounce, Duration::from_millis(250));
                assert_eq!(r.poll, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_toml_keys_are_refused_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("gateway.toml");
        std::fs::write(&toml, "tls_certificate = \"x\"\n").unwrap();
        let err = parse(&["--config", toml.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gateway.toml") && err.contains("tls_certificate"),
            "{err}"
        );
    }

    #[test]
    fn client_auth_defaults_to_required_with_a_ca_and_needs_a_ca() {
        let cfg = parse(&["--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca"]).unwrap();
        match cfg.tls {
            TlsMode::Files { files, .. } => assert_eq!(files.client_auth(), ClientAuth::Required),
            other => panic!("{other:?}"),
        }
        let err = parse(&[
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--tls-client-auth",
            "required",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--tls-client-ca"), "{err}");
    }

    #[test]
    fn crls_repeat_and_no_tls_reload_turns_the_watcher_off() {
        let cfg = parse(&[
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--tls-client-ca",
            "ca",
            "--tls-crl",
            "a.pem",
            "--tls-crl",
            "b.pem",
            "--no-tls-reload",
        ])
        .unwrap();
        match cfg.tls {
            TlsMode::Files { files, reload } => {
                assert_eq!(files.crl_paths().len(), 2);
                assert!(reload.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_durations_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("g.toml");
        std::fs::write(&toml, "disable_tls = true\nhandshake_timeout = \"soon\"\n").unwrap();
        let err = parse(&["--config", toml.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("handshake_timeout"), "{err}");
    }
}
