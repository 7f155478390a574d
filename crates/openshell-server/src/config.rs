//! Command line, environment and TOML configuration, resolved into one
//! [`Config`].
//!
//! Precedence: a flag, then its `OPENSHELL_*` environment variable, then the
//! TOML file given by `--config`, then the default.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, ValueEnum};
use serde::Deserialize;
use tls_reload::{ClientAuth, SniIdentity, TlsFiles};

use crate::error::{Error, Result};

/// Every setting, as a flag (with its environment variable) and as a key of
/// the TOML file: one struct, so the two cannot drift apart. Unset settings
/// are `None` (or `false`, or empty) and take their default in
/// [`Config::from_settings`].
///
/// The OpenShell gateway: gRPC and HTTP on one TLS port, with certificates
/// reloaded from disk as they change.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(name = "openshell-gateway", version, about, long_about = None)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    /// TOML file with any of these settings (names as the flags, with
    /// underscores: `tls_cert = "/etc/tls/tls.crt"`).
    #[arg(long, env = "OPENSHELL_CONFIG", value_name = "PATH")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Address of the TLS port serving gRPC and HTTP [default: 0.0.0.0:8080;
    /// 127.0.0.1:8080 with --dev].
    #[arg(long, env = "OPENSHELL_BIND", value_name = "ADDR")]
    bind: Option<SocketAddr>,

    /// Server certificate chain, PEM, leaf first.
    #[arg(long, env = "OPENSHELL_TLS_CERT", value_name = "PATH")]
    tls_cert: Option<PathBuf>,

    /// Private key of the server certificate, PEM.
    #[arg(long, env = "OPENSHELL_TLS_KEY", value_name = "PATH")]
    tls_key: Option<PathBuf>,

    /// CA bundle that client certificates must chain to, PEM.
    #[arg(long, env = "OPENSHELL_TLS_CLIENT_CA", value_name = "PATH")]
    tls_client_ca: Option<PathBuf>,

    /// Client certificate policy [default: required with a client CA, else
    /// none].
    #[arg(
        long,
        env = "OPENSHELL_TLS_CLIENT_AUTH",
        value_name = "MODE",
        value_parser = PossibleValuesParser::new(["none", "optional", "required"])
            .try_map(|s| s.parse::<ClientAuth>())
    )]
    #[serde(deserialize_with = "from_str")]
    tls_client_auth: Option<ClientAuth>,

    /// Certificate revocation list for client certificates, PEM
    /// (repeatable; comma-separated in the environment variable).
    #[arg(
        long = "tls-crl",
        env = "OPENSHELL_TLS_CRL",
        value_name = "PATH",
        value_delimiter = ','
    )]
    tls_crl: Vec<PathBuf>,

    /// An extra certificate served to clients asking for one of NAMES (SNI):
    /// `NAME[,NAME...]=DIR`, DIR holding `tls.crt` and `tls.key` (a
    /// `kubernetes.io/tls` Secret mounted as a directory). Repeatable;
    /// `;`-separated in the environment variable. A name may be a
    /// single-label wildcard (`*.apps.example.com`); other names, and
    /// clients sending none, get --tls-cert.
    #[arg(
        long = "tls-sni",
        env = "OPENSHELL_TLS_SNI",
        value_name = "NAMES=DIR",
        value_delimiter = ';',
        value_parser = SniSetting::parse_flag
    )]
    tls_sni: Vec<SniSetting>,

    /// Serve plaintext instead of TLS (explicit opt-out; not for production).
    #[arg(long, env = "OPENSHELL_DISABLE_TLS")]
    disable_tls: bool,

    /// Quiet period after a file change before reloading [default: 1s].
    #[arg(long, env = "OPENSHELL_TLS_RELOAD_DEBOUNCE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    tls_reload_debounce: Option<Duration>,

    /// Interval of the safety-net poll of the TLS files [default: 30s].
    #[arg(long, env = "OPENSHELL_TLS_RELOAD_POLL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    tls_reload_poll: Option<Duration>,

    /// Do not watch the TLS files; reload only on SIGHUP or ReloadTls.
    #[arg(long, env = "OPENSHELL_NO_TLS_RELOAD")]
    no_tls_reload: bool,

    /// Plaintext address serving only /healthz and /readyz, for kubelet
    /// probes [default: none].
    #[arg(long, env = "OPENSHELL_HEALTH_BIND", value_name = "ADDR")]
    health_bind: Option<SocketAddr>,

    /// Log format [default: pretty].
    #[arg(long, env = "OPENSHELL_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    /// Where OCSF audit events go, one JSON object per line: `stderr` or a
    /// file path (appended) [default: stderr].
    #[arg(long, env = "OPENSHELL_OCSF_LOG", value_name = "stderr|PATH")]
    ocsf_log: Option<String>,

    /// Close HTTP/2 and HTTP/1 connections after this age (after a graceful
    /// GOAWAY), so long-lived clients re-handshake and see rotated
    /// certificates [default: 1h].
    #[arg(long, env = "OPENSHELL_MAX_CONNECTION_AGE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    max_connection_age: Option<Duration>,

    /// How long a connection past its max age may finish in-flight requests
    /// [default: 30s].
    #[arg(long, env = "OPENSHELL_MAX_CONNECTION_AGE_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    max_connection_age_grace: Option<Duration>,

    /// A client must complete the TLS handshake, then send its first
    /// request (on both ports), and each HTTP/1 request's headers, within
    /// this time [default: 10s].
    #[arg(long, env = "OPENSHELL_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    handshake_timeout: Option<Duration>,

    /// On SIGTERM, how long open connections may drain [default: 30s].
    /// Connections draining at shutdown get this, even when it is longer
    /// than the max-age grace.
    #[arg(long, env = "OPENSHELL_SHUTDOWN_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    shutdown_grace: Option<Duration>,

    /// On SIGTERM, first report not-ready and keep accepting for this long
    /// (while Kubernetes removes the pod from its endpoints), then drain
    /// [default: 0s].
    #[arg(long, env = "OPENSHELL_SHUTDOWN_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    shutdown_delay: Option<Duration>,

    /// Open connections allowed on the TLS port; further connections are
    /// closed at once and counted [default: 10000, or fewer so that the
    /// health port and the TLS files keep descriptors under the process's
    /// open-file limit].
    #[arg(long, env = "OPENSHELL_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,

    /// Open connections allowed on the health port [default: 64].
    #[arg(long, env = "OPENSHELL_HEALTH_MAX_CONNECTIONS", value_name = "N")]
    health_max_connections: Option<usize>,

    /// Zero-setup development mode: generate a CA, a localhost server
    /// certificate and a client certificate in the state directory (kept
    /// across runs) and serve with TLS and hot-reload on.
    #[arg(long, env = "OPENSHELL_DEV")]
    dev: bool,

    /// State directory for --dev [default: $XDG_STATE_HOME/openshell/dev, or
    /// ~/.local/state/openshell/dev].
    #[arg(long, env = "OPENSHELL_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl Settings {
    /// Flags and environment variables over the TOML file named by
    /// `--config` (or `OPENSHELL_CONFIG`).
    fn parse<I, T>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut settings = Self::from_arg_matches(&matches)?;
        if let Some(path) = settings.config.take() {
            let file = Self::read(&path)?;
            let mut merged = file.clone();
            // Only what was given on the command line or in the
            // environment replaces the file's value.
            merged.update_from_arg_matches(&matches)?;
            // Switches are off unless turned on somewhere: a flag that was
            // not given does not turn off the file's `true`.
            merged.disable_tls |= file.disable_tls;
            merged.no_tls_reload |= file.no_tls_reload;
            merged.dev |= file.dev;
            settings = merged;
        }
        Ok(settings)
    }

    /// The TOML file; an error names the file, and the key (or the
    /// `[[tls_sni]]` table) at fault.
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading config file {}: {e}", path.display())))?;
        let settings: Self = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| {
                    let line = before.matches('\n').count() + 1;
                    let key = text.lines().nth(line - 1).unwrap_or_default().trim();
                    format!(", line {line} `{key}`")
                })
                .unwrap_or_default();
            Error::Config(format!(
                "config file {}{at}: {}",
                path.display(),
                e.message()
            ))
        })?;
        for (i, table) in settings.tls_sni.iter().enumerate() {
            table.identity().map_err(|problem| {
                Error::Config(format!(
                    "config file {}: [[tls_sni]] table {} (names {:?}): {problem}",
                    path.display(),
                    i + 1,
                    table.names
                ))
            })?;
        }
        Ok(settings)
    }
}

/// One SNI identity as configured: `--tls-sni NAMES=DIR`, or a `[[tls_sni]]`
/// table of the TOML file with `names` and either `dir` or `cert` + `key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SniSetting {
    names: Vec<String>,
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
}

impl SniSetting {
    /// Parses `NAME[,NAME...]=DIR`; the error (which clap prints after the
    /// flag and the value) says what is missing.
    fn parse_flag(value: &str) -> std::result::Result<Self, String> {
        let Some((names, dir)) = value.split_once('=') else {
            return Err("expected NAME[,NAME...]=DIR: no `=`".into());
        };
        let names: Vec<String> = names.split(',').map(|n| n.trim().to_owned()).collect();
        if names.iter().any(String::is_empty) {
            return Err("expected NAME[,NAME...]=DIR: an empty server name".into());
        }
        if dir.trim().is_empty() {
            return Err("expected NAME[,NAME...]=DIR: an empty DIR".into());
        }
        Ok(Self {
            names,
            dir: Some(PathBuf::from(dir)),
            ..Self::default()
        })
    }

    /// The identity: the directory's `tls.crt` and `tls.key`, or the two
    /// files named. Exactly one of the two forms, and at least one name.
    fn identity(&self) -> std::result::Result<SniIdentity, &'static str> {
        if self.names.is_empty() || self.names.iter().any(|n| n.trim().is_empty()) {
            return Err("`names` must list at least one server name, none empty");
        }
        let files = match (&self.dir, &self.cert, &self.key) {
            (Some(dir), None, None) => TlsFiles::new(dir.join("tls.crt"), dir.join("tls.key")),
            (None, Some(cert), Some(key)) => TlsFiles::new(cert, key),
            (Some(_), _, _) => return Err("give either `dir` or `cert` + `key`, not both"),
            (None, None, None) => return Err("needs `dir`, or `cert` and `key`"),
            (None, _, _) => return Err("`cert` and `key` go together"),
        };
        Ok(SniIdentity::new(self.names.iter().cloned(), files))
    }
}

/// Deserializes a setting through its `FromStr`, as the flag parses it.
fn from_str<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr<Err: std::fmt::Display>,
{
    Option::<String>::deserialize(d)?
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
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
        /// The files and client-auth policy: the default identity, served
        /// when no SNI identity has the name a client asks for.
        files: TlsFiles,
        /// The SNI identities (`--tls-sni`), in the order configured.
        sni: Vec<SniIdentity>,
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

impl Default for ReloadSettings {
    /// 1 s debounce, 30 s poll.
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(1),
            poll: Duration::from_secs(30),
        }
    }
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
        Self::with_defaults(
            bind,
            TlsMode::Files {
                files,
                sni: Vec::new(),
                reload: Some(ReloadSettings::default()),
            },
        )
    }

    /// The documented defaults of every setting but these two.
    fn with_defaults(bind: SocketAddr, tls: TlsMode) -> Self {
        Self {
            bind,
            health_bind: None,
            tls,
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

    /// Resolves the command line `args` (program name first), the
    /// `OPENSHELL_*` environment variables and the TOML file. In `--dev`
    /// mode the certificate paths point into the state directory;
    /// [`run`](crate::run) creates the files.
    ///
    /// # Errors
    ///
    /// [`Error::Args`] for a bad command line (and for `--help` and
    /// `--version`, whose text it carries); [`Error::Config`] for an
    /// unreadable or invalid TOML file or contradictory settings.
    pub fn from_args<I, T>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let config = Self::from_settings(Settings::parse(args)?)?;
        config.check()?;
        Ok(config)
    }

    fn from_settings(s: Settings) -> Result<Self> {
        if s.dev && s.disable_tls {
            return Err(Error::Config(
                "--dev and --disable-tls exclude each other".into(),
            ));
        }
        let default_bind = if s.dev {
            SocketAddr::from(([127, 0, 0, 1], 8080))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 8080))
        };
        let (mut cert, mut key) = (s.tls_cert, s.tls_key);
        let (mut client_ca, mut client_auth) = (s.tls_client_ca, s.tls_client_auth);
        let mut dev_state_dir = None;
        if s.dev {
            let dir = match s.state_dir {
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
                client_auth.get_or_insert(ClientAuth::Optional);
            }
            dev_state_dir = Some(dir);
        }

        let tls = if s.disable_tls {
            if !s.tls_sni.is_empty() {
                return Err(Error::Config(
                    "--tls-sni needs TLS: it excludes --disable-tls".into(),
                ));
            }
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
            match (client_ca, client_auth) {
                (Some(ca), mode) => {
                    files = files.client_ca(ca, mode.unwrap_or(ClientAuth::Required));
                }
                (None, Some(mode @ (ClientAuth::Optional | ClientAuth::Required))) => {
                    return Err(Error::Config(format!(
                        "--tls-client-auth {mode} needs --tls-client-ca"
                    )));
                }
                (None, _) => {}
            }
            for crl in s.tls_crl {
                files = files.crl(crl);
            }
            let default = ReloadSettings::default();
            let reload = (!s.no_tls_reload).then(|| ReloadSettings {
                debounce: s.tls_reload_debounce.unwrap_or(default.debounce),
                poll: s.tls_reload_poll.unwrap_or(default.poll),
            });
            let sni = s
                .tls_sni
                .iter()
                .map(|setting| {
                    setting.identity().map_err(|problem| {
                        Error::Config(format!("--tls-sni {:?}: {problem}", setting.names))
                    })
                })
                .collect::<Result<_>>()?;
            TlsMode::Files { files, sni, reload }
        };

        let d = Self::with_defaults(s.bind.unwrap_or(default_bind), tls);
        let health_max_connections = s.health_max_connections.unwrap_or(d.health_max_connections);
        Ok(Self {
            health_bind: s.health_bind,
            log_format: s.log_format.unwrap_or(d.log_format),
            ocsf: match s.ocsf_log.as_deref() {
                None | Some("stderr") | Some("-") => OcsfTarget::Stderr,
                Some(path) => OcsfTarget::File(PathBuf::from(path)),
            },
            max_connection_age: s.max_connection_age.unwrap_or(d.max_connection_age),
            max_connection_age_grace: s
                .max_connection_age_grace
                .unwrap_or(d.max_connection_age_grace),
            handshake_timeout: s.handshake_timeout.unwrap_or(d.handshake_timeout),
            shutdown_grace: s.shutdown_grace.unwrap_or(d.shutdown_grace),
            shutdown_delay: s.shutdown_delay.unwrap_or(d.shutdown_delay),
            max_connections: s.max_connections.unwrap_or_else(|| {
                default_max_connections(open_file_limit(), health_max_connections)
            }),
            health_max_connections,
            dev_state_dir,
            ..d
        })
    }

    /// Checks the ranges: connection caps from 1 to a million; timeouts and
    /// ages more than zero (a zero max age would close every connection at
    /// once); every duration at most a year, so that deadlines computed
    /// from it cannot overflow.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the setting, its value and the range.
    pub fn check(&self) -> Result<()> {
        for (name, n) in [
            ("max_connections", self.max_connections),
            ("health_max_connections", self.health_max_connections),
        ] {
            if !(1..=MAX_CONNECTIONS_LIMIT).contains(&n) {
                return Err(Error::Config(format!(
                    "{name} = {n}: expected 1 to {MAX_CONNECTIONS_LIMIT}"
                )));
            }
        }
        for (name, d, zero_allowed) in [
            ("max_connection_age", self.max_connection_age, false),
            ("handshake_timeout", self.handshake_timeout, false),
            (
                "max_connection_age_grace",
                self.max_connection_age_grace,
                true,
            ),
            ("shutdown_grace", self.shutdown_grace, true),
            ("shutdown_delay", self.shutdown_delay, true),
        ] {
            if d > YEAR || (d.is_zero() && !zero_allowed) {
                let expected = if zero_allowed {
                    "at most 365 days"
                } else {
                    "more than 0 and at most 365 days"
                };
                return Err(Error::Config(format!(
                    "{name} = {}: expected {expected}",
                    humantime::format_duration(d)
                )));
            }
        }
        Ok(())
    }
}

/// Default of `--max-connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of `--health-max-connections`: probes need a handful.
const DEFAULT_HEALTH_MAX_CONNECTIONS: usize = 64;

/// Largest connection cap accepted: far above what a process can hold open.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// The longest duration accepted.
const YEAR: Duration = Duration::from_secs(365 * 86_400);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config> {
        let mut argv = vec!["openshell-gateway"];
        argv.extend_from_slice(args);
        Config::from_args(argv)
    }

    /// Parses `args` with `--config` naming a file `gateway.toml` that
    /// holds `toml`.
    fn parse_with_file(toml: &str, args: &[&str]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        let mut argv = vec!["--config", path.to_str().unwrap()];
        argv.extend_from_slice(args);
        parse(&argv)
    }

    /// Loads `toml` as the config file, which must be refused with an
    /// error naming the file and each of `needles`.
    fn assert_file_refused(toml: &str, needles: &[&str]) {
        let err = parse_with_file(toml, &[]).unwrap_err().to_string();
        for needle in ["gateway.toml"].iter().chain(needles) {
            assert!(err.contains(needle), "{toml}: no {needle:?} in {err}");
        }
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
        let cfg = parse_with_file(
            "tls_cert = \"/t/tls.crt\"\ntls_key = \"/t/tls.key\"\nbind = \"127.0.0.1:9000\"\n\
             tls_reload_debounce = \"250ms\"\nhealth_bind = \"127.0.0.1:9001\"\n",
            &["--bind", "127.0.0.1:9100"],
        )
        .unwrap();
        assert_eq!(cfg.bind, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(cfg.health_bind, Some("127.0.0.1:9001".parse().unwrap()));
        assert_eq!(cfg.max_connection_age, Duration::from_secs(3600));
        match cfg.tls {
            TlsMode::Files {
                files,
                reload: Some(r),
                ..
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
        assert_file_refused("tls_certificate = \"x\"\n", &["tls_certificate"]);
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
            TlsMode::Files { files, reload, .. } => {
                assert_eq!(files.crl_paths().len(), 2);
                assert!(reload.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_durations_name_the_setting() {
        for (bad, key) in [
            ("handshake_timeout = \"soon\"", "handshake_timeout"),
            ("tls_client_auth = \"sometimes\"", "tls_client_auth"),
        ] {
            assert_file_refused(&format!("disable_tls = true\n{bad}\n"), &["line 2", key]);
        }
    }

    #[test]
    fn switches_and_typed_values_come_from_the_file_unless_a_flag_is_given() {
        let toml = "disable_tls = true\nshutdown_delay = \"2s\"\nlog_format = \"json\"\n\
                    max_connections = 9\n";
        let cfg = parse_with_file(toml, &[]).unwrap();
        assert!(matches!(cfg.tls, TlsMode::Disabled));
        assert_eq!(cfg.shutdown_delay, Duration::from_secs(2));
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.max_connections, 9);
        let flags = ["--log-format", "pretty", "--shutdown-delay", "1s"];
        let cfg = parse_with_file(toml, &flags).unwrap();
        assert!(
            matches!(cfg.tls, TlsMode::Disabled),
            "a switch the file set"
        );
        assert_eq!(cfg.log_format, LogFormat::Pretty);
        assert_eq!(cfg.shutdown_delay, Duration::from_secs(1));
    }

    /// The SNI identities of a config: (names, cert path, key path).
    fn sni(cfg: &Config) -> Vec<(Vec<String>, PathBuf, PathBuf)> {
        match &cfg.tls {
            TlsMode::Files { sni, .. } => sni
                .iter()
                .map(|i| {
                    let f = i.files();
                    (
                        i.names().to_vec(),
                        f.cert_path().to_owned(),
                        f.key_path().to_owned(),
                    )
                })
                .collect(),
            TlsMode::Disabled => panic!("TLS disabled"),
        }
    }

    fn owned(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn tls_sni_flags_repeat_and_split_on_semicolons_as_the_variable_does() {
        let cfg = parse(&[
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--tls-sni",
            "api.example.com,*.apps.example.com=/etc/openshell-tls/external",
            "--tls-sni",
            "a.example.com=/a;b.example.com=/b",
        ])
        .unwrap();
        let dir = Path::new("/etc/openshell-tls/external");
        assert_eq!(
            sni(&cfg),
            [
                (
                    owned(&["api.example.com", "*.apps.example.com"]),
                    dir.join("tls.crt"),
                    dir.join("tls.key")
                ),
                (
                    owned(&["a.example.com"]),
                    "/a/tls.crt".into(),
                    "/a/tls.key".into()
                ),
                (
                    owned(&["b.example.com"]),
                    "/b/tls.crt".into(),
                    "/b/tls.key".into()
                ),
            ]
        );
        assert!(sni(&parse(&["--tls-cert", "c", "--tls-key", "k"]).unwrap()).is_empty());
    }

    #[test]
    fn bad_tls_sni_values_name_the_flag_the_value_and_the_problem() {
        for (bad, problem) in [
            ("api.example.com", "no `=`"),
            ("=/etc/tls", "an empty server name"),
            (
                "a.example.com,,b.example.com=/etc/tls",
                "an empty server name",
            ),
            ("api.example.com=", "an empty DIR"),
        ] {
            let err = parse(&["--tls-cert", "c", "--tls-key", "k", "--tls-sni", bad])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--tls-sni") && err.contains(bad) && err.contains(problem),
                "{bad}: {err}"
            );
        }
        let err = parse(&["--disable-tls", "--tls-sni", "a.example.com=/d"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-sni needs TLS"), "{err}");
    }

    #[test]
    fn tls_sni_tables_take_a_dir_or_a_cert_and_key_and_flags_replace_them() {
        let toml = "tls_cert = \"c\"\ntls_key = \"k\"\n\
                    [[tls_sni]]\nnames = [\"api.example.com\"]\ndir = \"/ext\"\n\
                    [[tls_sni]]\nnames = [\"b.example.com\", \"*.b.example.com\"]\n\
                    cert = \"/b/chain.pem\"\nkey = \"/b/key.pem\"\n";
        let cfg = parse_with_file(toml, &[]).unwrap();
        assert_eq!(
            sni(&cfg),
            [
                (
                    owned(&["api.example.com"]),
                    "/ext/tls.crt".into(),
                    "/ext/tls.key".into()
                ),
                (
                    owned(&["b.example.com", "*.b.example.com"]),
                    "/b/chain.pem".into(),
                    "/b/key.pem".into()
                ),
            ]
        );
        let cfg = parse_with_file(toml, &["--tls-sni", "c.example.com=/c"]).unwrap();
        assert_eq!(sni(&cfg).len(), 1, "the flag replaces the file's tables");
    }

    #[test]
    fn a_bad_tls_sni_table_is_named_by_file_and_index() {
        let head = "tls_cert = \"c\"\ntls_key = \"k\"\n\
                    [[tls_sni]]\nnames = [\"ok.example.com\"]\ndir = \"/ok\"\n[[tls_sni]]\n";
        for (table, problem) in [
            (
                "names = [\"a.example.com\"]\ndir = \"/d\"\ncert = \"/c\"\nkey = \"/k\"\n",
                "not both",
            ),
            ("names = [\"a.example.com\"]\n", "needs `dir`"),
            (
                "names = [\"a.example.com\"]\ncert = \"/c\"\n",
                "`cert` and `key` go together",
            ),
            ("names = []\ndir = \"/d\"\n", "at least one server name"),
        ] {
            assert_file_refused(&format!("{head}{table}"), &["[[tls_sni]] table 2", problem]);
        }
        assert_file_refused(
            &format!("{head}names = [\"a\"]\npath = \"/d\"\n"),
            &["path"],
        );
    }

    #[test]
    fn help_names_each_flag_its_variable_and_its_values() {
        let Err(Error::Args(help)) = parse(&["--help"]) else {
            panic!("--help is not an Args error");
        };
        let help = help.to_string();
        for text in [
            "--tls-reload-debounce <DURATION>",
            "[env: OPENSHELL_TLS_RELOAD_DEBOUNCE=]",
            "--tls-client-auth <MODE>",
            "[possible values: none, optional, required]",
            "--config <PATH>",
            "--tls-sni <NAMES=DIR>",
            "[env: OPENSHELL_TLS_SNI=]",
        ] {
            assert!(help.contains(text), "no {text} in\n{help}");
        }
    }
}
