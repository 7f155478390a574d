#![allow(clippy::print_stderr)] // An example talks to its user on stderr.

//! A long-lived mTLS gRPC client of the gateway, as a sandbox supervisor
//! runs one: it calls `WhoAmI` on an interval through a
//! [`ReloadableConnector`], and keeps working while its own certificate,
//! its trust bundle and the gateway's certificate rotate under it.
//!
//! ```text
//! cargo run -p openshell-server --example mtls_client -- \
//!     --addr 127.0.0.1:8080 --server-name localhost \
//!     --ca ca.crt --cert client.crt --key client.key \
//!     [--interval 1s] [--count N] [--debounce 1s] [--timeout 5s]
//! ```
//!
//! Each call prints one JSON line on stdout:
//!
//! * `seq`: the call's number, from 1; `at_ms`: when it ended (Unix ms);
//!   `latency_ms`: how long it took, retry included.
//! * `ok`: whether it succeeded; `error` when it did not.
//! * `attempts`: 1, or 2 when the call was retried once on a fresh channel
//!   after a transport failure (a connection the gateway was closing, say);
//!   `first_error` then says why. A retried call that fails again is
//!   `ok: false`: nothing is hidden.
//! * `server_fingerprint`: the leaf the gateway presented on the channel's
//!   latest connection, as the connector saw it in the handshake;
//!   `resumed`: whether that handshake resumed a session (never: resumption
//!   is off, so that every connection verifies the gateway's current
//!   certificate).
//! * `client_fingerprint` and `authenticated`: the certificate the gateway
//!   says it verified (`WhoAmI`).
//! * `reloads`: the client's successful reloads of its files so far;
//!   `generation`: the connector's generation, which changes with every
//!   change of identity or trust; `channel`: which channel carried the
//!   call (a new one after each change, and for each retry).
//!
//! When the connector reloads (its generation changes), new calls move to a
//! fresh channel, whose connection shakes hands with the new identity and
//! trust; a call already running keeps its clone of the old channel and
//! finishes on it, and the old connection closes with its last clone.
//! Errors and warnings go to stderr. With `--count N` it exits after N
//! calls: 0 when every call succeeded, 1 otherwise.

use std::error::Error as StdError;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use openshell_server::pb::WhoAmIRequest;
use openshell_server::pb::gateway_client::GatewayClient;
use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tls_reload::{ClientFiles, HttpsConnector, ReloadableConnector, TlsConnection};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower::ServiceExt as _;

/// Calls the gateway's `WhoAmI` over mTLS on an interval, one JSON line
/// per call, following rotations of its certificate and trust bundle.
#[derive(Debug, Parser)]
#[command(name = "mtls_client")]
struct Args {
    /// The gateway's address, `HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT")]
    addr: String,
    /// The name the gateway's certificate must carry (sent as SNI).
    #[arg(long, value_name = "NAME")]
    server_name: String,
    /// The CA bundle the gateway's certificate must chain to, PEM.
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// The client certificate chain, PEM, leaf first.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// Its private key, PEM.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Time between two calls.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many calls [default: never].
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Quiet period after a change of the files before reloading them.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    debounce: Duration,
    /// Deadline of one attempt of a call, connecting included.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// What the latest handshake of a channel saw.
#[derive(Clone, Default)]
struct Seen {
    /// The leaf the gateway presented.
    server_fingerprint: Option<String>,
    /// Whether the handshake resumed a session.
    resumed: Option<bool>,
}

/// A gRPC channel and the slot where its connector records what the
/// channel's latest connection saw in its handshake.
struct Lane {
    id: u64,
    channel: Channel,
    seen: Arc<Mutex<Seen>>,
}

/// What one attempt of a call returned.
struct Answer {
    authenticated: bool,
    client_fingerprint: Option<String>,
}

/// Makes channels to one gateway through one connector.
struct Dialer {
    endpoint: Endpoint,
    connector: ReloadableConnector,
    server_name: ServerName<'static>,
    opened: u64,
}

impl Dialer {
    /// A new channel; it connects on its first call (and again after the
    /// gateway closes its connection), each time through the connector's
    /// current identity and trust.
    fn open(&mut self) -> Lane {
        self.opened += 1;
        let slot = Arc::new(Mutex::new(Seen::default()));
        let record = slot.clone();
        let https = HttpsConnector::new(self.connector.clone())
            .server_name(self.server_name.clone())
            .map_response(move |conn: TlsConnection| {
                let kind = conn.get_ref().get_ref().1.handshake_kind();
                let seen = Seen {
                    server_fingerprint: conn.server_fingerprint().map(|f| f.to_string()),
                    resumed: kind.map(|k| k == HandshakeKind::Resumed),
                };
                *record.lock().unwrap_or_else(PoisonError::into_inner) = seen;
                conn
            });
        Lane {
            id: self.opened,
            channel: self.endpoint.connect_with_connector_lazy(https),
            seen: slot,
        }
    }
}

impl Lane {
    fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn who_am_i(&self) -> Result<Answer, Status> {
        let mut client = GatewayClient::new(self.channel.clone());
        let reply = client.who_am_i(WhoAmIRequest {}).await?.into_inner();
        Ok(Answer {
            authenticated: reply.authenticated,
            client_fingerprint: reply.client_certificate.map(|c| c.fingerprint_sha256),
        })
    }
}

/// Whether a failed attempt may be retried once on a fresh channel: the
/// codes a transport produces (a connection refused, reset or closing, a
/// handshake that failed, a deadline), not an answer of the service.
/// `WhoAmI` only reads, so a retry cannot do anything twice.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    )
}

/// A status and the chain of errors behind it, on one line.
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = StdError::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn say(line: &str) {
    eprintln!("mtls_client: {line}");
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            say(&format!("error: {text}"));
            ExitCode::FAILURE
        }
    }
}

/// Calls until `--count` is reached or the process is interrupted; `true`
/// when every call succeeded.
async fn run(args: Args) -> Result<bool, Box<dyn StdError>> {
    let server_name = ServerName::try_from(args.server_name.clone())
        .map_err(|e| format!("--server-name {}: {e}", args.server_name))?;
    let files = ClientFiles::new(&args.ca).identity(&args.cert, &args.key);
    // No session resumption: a resumed session is not verified again, so
    // after the gateway's certificate rotates, a connection that resumes
    // (the reconnection at the gateway's max connection age, say) would
    // still be authenticated by the certificate of the session's first
    // handshake. A client that reconnects rarely loses little by it.
    // The watcher reloads the files while it lives: keep it.
    let (connector, _watcher) = ReloadableConnector::builder(files)
        .alpn(["h2"])
        .session_cache_size(0)
        .debounce(args.debounce)
        .start()?;
    // The connector does the TLS, so the URI says `http`: tonic built with
    // one of its own TLS features refuses an `https` URI it has no TLS
    // config for.
    let endpoint = Endpoint::from_shared(format!("http://{}", args.addr))
        .map_err(|e| format!("--addr {}: {e}", args.addr))?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    let mut changes = connector.changes();
    changes.borrow_and_update();
    let mut dialer = Dialer {
        endpoint,
        connector: connector.clone(),
        server_name,
        opened: 0,
    };
    let mut lane = dialer.open();
    let mut ticks = tokio::time::interval(args.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut all_ok = true;
    let mut seq = 0u64;
    let mut out = std::io::stdout();
    while args.count.is_none_or(|n| seq < n) {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        seq += 1;
        // New identity or trust: new calls go to a fresh channel.
        if changes.has_changed().unwrap_or(false) {
            changes.borrow_and_update();
            lane = dialer.open();
        }
        let started = Instant::now();
        let mut attempts = 1;
        let mut first_error = None;
        let mut result = lane.who_am_i().await;
        if let Err(status) = &result
            && retryable(status)
        {
            // The connection may be one the gateway is closing (GOAWAY at
            // its max age, or a change of its trust): once more, on a
            // fresh channel.
            first_error = Some(describe(status));
            attempts = 2;
            lane = dialer.open();
            result = lane.who_am_i().await;
        }
        let generation = connector.generation();
        let reloads = connector.status().reloads_succeeded;
        let seen = lane.seen();
        let mut line = json!({
            "seq": seq,
            "at_ms": unix_ms(),
            "latency_ms": started.elapsed().as_millis(),
            "ok": result.is_ok(),
            "attempts": attempts,
            "server_fingerprint": seen.server_fingerprint,
            "resumed": seen.resumed,
            "reloads": reloads,
            "generation": generation,
            "channel": lane.id,
        });
        match result {
            Ok(answer) => {
                line["authenticated"] = answer.authenticated.into();
                line["client_fingerprint"] = answer.client_fingerprint.into();
            }
            Err(status) => {
                all_ok = false;
                let error = describe(&status);
                say(&format!(
                    "call {seq} failed after {attempts} attempt(s): {error}"
                ));
                line["error"] = error.into();
                line["client_fingerprint"] = Value::Null;
            }
        }
        if let Some(first) = first_error {
            line["first_error"] = first.into();
        }
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(all_ok)
}
