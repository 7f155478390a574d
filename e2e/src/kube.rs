//! A Kubernetes cluster driven with `kubectl` and `helm`, for the k3s
//! end-to-end tests: the chart installed, Secrets overwritten and read back,
//! pods inspected, and the gateway's port forwarded to loopback.
//!
//! Every program runs with `KUBECONFIG` set to the configured file and with
//! a deadline; a failure names the command line and quotes its stderr.
//!
//! # Known problems
//!
//! * Kubelet projects a changed Secret into running pods on its own
//!   schedule (its sync period, one minute by default, plus its cache TTL),
//!   not when the Secret is written: waits for a rotation to be served
//!   allow two minutes.
//! * `kubectl port-forward` may exit when one forwarded connection fails;
//!   [`PortForward::addr`] starts it again.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};
use tls_reload::testing::poll_blocking;

use crate::child::{self, Lines, lock, workspace_root};
use crate::command::{self, describe};
use crate::error::{Error, Result};

/// Environment variable naming the kubeconfig of the test cluster; the k3s
/// tests are skipped when it is not set.
pub const KUBECONFIG_ENV: &str = "OPENSHELL_E2E_KUBECONFIG";
/// Environment variable naming the namespace the tests install into.
pub const NAMESPACE_ENV: &str = "OPENSHELL_E2E_NAMESPACE";
/// Environment variable naming the gateway image to install.
pub const IMAGE_ENV: &str = "OPENSHELL_E2E_IMAGE";
/// The namespace used when [`NAMESPACE_ENV`] is not set.
pub const DEFAULT_NAMESPACE: &str = "openshell-e2e";
/// What a k3s test prints when it is skipped.
pub const SKIP_MESSAGE: &str = "skipping: OPENSHELL_E2E_KUBECONFIG is not set (k3s e2e tests need a cluster; see mise run e2e:k3s)";

/// Deadline of one `kubectl` call (each also gets `--request-timeout`).
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `kubectl port-forward` may take to start forwarding.
const PORT_FORWARD_START: Duration = Duration::from_secs(30);

/// The chart in this repository: `deploy/helm/openshell`.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/helm/openshell")
}

/// A loopback port that was free a moment ago.
///
/// # Errors
///
/// When no loopback port can be bound.
pub fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("binding a free loopback port", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the free loopback port", e))?;
    Ok(addr.port())
}

// === impl Cluster ===

/// The test cluster: a kubeconfig file and the namespace to work in.
///
/// `kubectl` and `helm` come from `PATH`, or from the `KUBECTL` and `HELM`
/// environment variables.
#[derive(Debug, Clone)]
pub struct Cluster {
    kubeconfig: PathBuf,
    namespace: String,
    kubectl: OsString,
    helm: OsString,
}

impl Cluster {
    /// The cluster the environment names: `OPENSHELL_E2E_KUBECONFIG`, and
    /// `OPENSHELL_E2E_NAMESPACE` (default `openshell-e2e`). `None` when
    /// `OPENSHELL_E2E_KUBECONFIG` is unset or empty: the caller skips.
    ///
    /// # Errors
    ///
    /// When `OPENSHELL_E2E_KUBECONFIG` names no file.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(kubeconfig) = std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let kubeconfig = PathBuf::from(kubeconfig);
        if !kubeconfig.is_file() {
            return Err(Error::unexpected(
                KUBECONFIG_ENV,
                format!("{} is not a file", kubeconfig.display()),
            ));
        }
        let namespace = std::env::var(NAMESPACE_ENV)
            .ok()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        Ok(Some(Self::new(kubeconfig, namespace)))
    }

    /// A cluster reached with `kubeconfig`, working in `namespace`.
    pub fn new(kubeconfig: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        Self {
            kubeconfig: kubeconfig.into(),
            namespace: namespace.into(),
            kubectl: std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into()),
            helm: std::env::var_os("HELM").unwrap_or_else(|| "helm".into()),
        }
    }

    /// The namespace the tests work in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `kubectl --namespace <ns> --request-timeout=30s <args>`.
    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.kubectl_streaming(&[]);
        cmd.arg("--request-timeout=30s").args(args);
        cmd
    }

    /// `kubectl --namespace <ns> <args>` without a request timeout, for a
    /// command that streams for as long as it runs (`port-forward`).
    fn kubectl_streaming(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .args(["--namespace", &self.namespace])
            .args(args);
        cmd
    }

    /// `kubectl --namespace <ns> <args>`; returns its standard output.
    ///
    /// # Errors
    ///
    /// When kubectl cannot be run, fails (with its stderr) or takes more
    /// than a minute.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.kubectl_command(args);
        command::run(&mut cmd, None, KUBECTL_TIMEOUT)
    }

    /// `helm --namespace <ns> <args>`, allowed `within`; returns its
    /// standard output.
    ///
    /// # Errors
    ///
    /// When helm cannot be run, fails (with its stderr) or takes longer.
    pub fn helm(&self, args: &[&str], within: Duration) -> Result<String> {
        let mut cmd = Command::new(&self.helm);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .args(["--namespace", &self.namespace])
            .args(args);
        command::run(&mut cmd, None, within)
    }

    /// `kubectl apply -f -` of one manifest (JSON or YAML).
    ///
    /// # Errors
    ///
    /// As for [`kubectl`](Self::kubectl).
    pub fn apply(&self, manifest: &str) -> Result<()> {
        let mut cmd = self.kubectl_command(&["apply", "-f", "-"]);
        command::run(&mut cmd, Some(manifest.as_bytes()), KUBECTL_TIMEOUT).map(drop)
    }

    /// Creates the namespace unless it exists.
    ///
    /// # Errors
    ///
    /// As for [`kubectl`](Self::kubectl).
    pub fn ensure_namespace(&self) -> Result<()> {
        let manifest = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": self.namespace },
        });
        self.apply(&manifest.to_string())
    }

    /// Creates or overwrites the Secret `name` of type `kind`
    /// (`kubernetes.io/tls`, `Opaque`) with exactly `files` (key, contents),
    /// the way an operator does it:
    /// `kubectl create secret generic ... --dry-run=client -o json | kubectl apply -f -`.
    ///
    /// Nothing checks that the contents are valid: a test can publish a
    /// garbage key the way a broken renewal would.
    ///
    /// # Errors
    ///
    /// When the files cannot be staged, or as for [`kubectl`](Self::kubectl).
    pub fn apply_secret(&self, name: &str, kind: &str, files: &[(&str, &[u8])]) -> Result<()> {
        // kubectl reads --from-file; the staging directory (with a test
        // key in it) is removed when this returns.
        let staging = tempfile::tempdir().map_err(|e| Error::io("creating a staging dir", e))?;
        let mut args = ["create", "secret", "generic", name]
            .map(String::from)
            .to_vec();
        args.push(format!("--type={kind}"));
        for (key, contents) in files {
            let path = staging.path().join(key);
            std::fs::write(&path, contents)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            args.push(format!("--from-file={key}={}", path.display()));
        }
        args.extend(["--dry-run=client".into(), "-o".into(), "json".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let manifest = self.kubectl(&args)?;
        self.apply(&manifest)
    }

    /// Whether the Secret `name` exists.
    ///
    /// # Errors
    ///
    /// As for [`kubectl`](Self::kubectl).
    pub fn secret_exists(&self, name: &str) -> Result<bool> {
        let found = self.kubectl(&["get", "secret", name, "--ignore-not-found", "-o", "name"])?;
        Ok(!found.trim().is_empty())
    }

    /// The decoded value of `key` in the Secret `name`.
    ///
    /// # Errors
    ///
    /// When the Secret or the key does not exist, or as for
    /// [`kubectl`](Self::kubectl).
    pub fn secret_value(&self, name: &str, key: &str) -> Result<String> {
        let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
        self.kubectl(&["get", "secret", name, "-o", &template])
    }

    /// `kubectl <args> -o json`, parsed.
    ///
    /// # Errors
    ///
    /// As for [`kubectl`](Self::kubectl), or output that is not JSON.
    pub fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.kubectl(&[args, &["-o", "json"]].concat())?;
        serde_json::from_str(&out)
            .map_err(|e| Error::unexpected(format!("kubectl {}", args.join(" ")), e.to_string()))
    }

    /// Forwards a free loopback port to `remote_port` of `target`
    /// (`pod/NAME`, `svc/NAME`) with `kubectl port-forward`, and waits
    /// until it forwards.
    ///
    /// # Errors
    ///
    /// When kubectl cannot be started, exits, or does not forward within
    /// 30 s.
    pub fn port_forward(&self, target: &str, remote_port: u16) -> Result<PortForward> {
        let mut forward = PortForward {
            cluster: self.clone(),
            target: target.to_owned(),
            remote_port,
            running: None,
        };
        forward.start()?;
        Ok(forward)
    }
}

// === impl PortForward ===

/// A `kubectl port-forward` to one target, killed when dropped.
#[derive(Debug)]
pub struct PortForward {
    cluster: Cluster,
    target: String,
    remote_port: u16,
    /// kubectl, the local address it forwards from, and what it printed.
    running: Option<(Child, SocketAddr, Lines)>,
}

impl PortForward {
    /// The local address that forwards to the target, starting kubectl
    /// again (on a new port) when it has exited.
    ///
    /// # Errors
    ///
    /// When kubectl cannot be started again.
    pub fn addr(&mut self) -> Result<SocketAddr> {
        if let Some((child, addr, _)) = &mut self.running
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok(*addr);
        }
        self.start()
    }

    /// Starts kubectl on a local port of its own choosing (`:REMOTE`, so
    /// no other process can take the port first) and reads the port from
    /// its `Forwarding from 127.0.0.1:PORT -> REMOTE` line.
    fn start(&mut self) -> Result<SocketAddr> {
        self.stop();
        let remote = format!(":{}", self.remote_port);
        let args = [
            "port-forward",
            "--address",
            "127.0.0.1",
            &self.target,
            &remote,
        ];
        let mut cmd = self.cluster.kubectl_streaming(&args);
        let command = describe(&cmd);
        let output = Lines::default();
        let (mut child, _readers) = child::spawn(&mut cmd, &command, &output, &output)?;
        let what = format!("`{command}` to forward");
        let every = Duration::from_millis(50);
        let forwarding = poll_blocking(PORT_FORWARD_START, every, &what, || {
            let lines = lock(&output).clone();
            let from = |l: &String| {
                l.strip_prefix("Forwarding from ")?
                    .split(" -> ")
                    .next()?
                    .parse()
                    .ok()
            };
            if let Some(addr) = lines.iter().find_map(from) {
                return Ok(Ok(addr));
            }
            match child.try_wait() {
                Ok(Some(status)) => Ok(Err(Error::CommandFailed {
                    command: command.clone(),
                    status,
                    stderr: lines.join("\n"),
                })),
                _ => Err(lines.join("\n")),
            }
        });
        match forwarding.map_err(Error::from).and_then(|started| started) {
            Ok(addr) => {
                self.running = Some((child, addr, output));
                Ok(addr)
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// What kubectl printed so far, for failure messages.
    pub fn output(&self) -> String {
        let lines = self
            .running
            .as_ref()
            .map(|(_, _, lines)| lock(lines).join("\n"));
        lines.unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some((mut child, _, _)) = self.running.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.stop();
    }
}

// === impl ImageRef ===

/// A container image reference split into the chart's `image.repository`,
/// `image.tag` and `image.digest` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry:port/path/name`.
    pub repository: String,
    /// The tag, possibly followed by `@sha256:...` (the form skaffold
    /// passes as `image.tag`); empty for the chart's default.
    pub tag: String,
    /// `sha256:...` when the reference has a digest and no tag.
    pub digest: String,
}

impl ImageRef {
    /// Splits `reference` (`name`, `name:tag`, `name@sha256:..`,
    /// `name:tag@sha256:..`, with an optional `registry:port/` prefix).
    ///
    /// # Errors
    ///
    /// When `reference` is empty or has an empty name.
    pub fn parse(reference: &str) -> Result<Self> {
        let reference = reference.trim();
        let (name_and_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a
        // registry port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_and_tag[..last_slash + i],
                Some(&name_and_tag[last_slash + i + 1..]),
            ),
            None => (name_and_tag, None),
        };
        if repository.is_empty() || tag == Some("") || digest == Some("") {
            return Err(Error::unexpected(
                "image reference",
                format!("cannot split {reference:?} into repository, tag and digest"),
            ));
        }
        // A tag and a digest travel together in `image.tag`.
        let (tag, digest) = match (tag, digest) {
            (Some(tag), Some(digest)) => (format!("{tag}@{digest}"), String::new()),
            (tag, digest) => (
                tag.unwrap_or_default().to_owned(),
                digest.unwrap_or_default().to_owned(),
            ),
        };
        Ok(Self {
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The chart's `image` values for this reference.
    pub fn values(&self) -> Value {
        json!({
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_like_the_chart_joins_them() {
        // The reference, then `repository tag digest` with `-` for empty.
        let cases = [
            ("openshell-gateway", "openshell-gateway - -"),
            ("openshell-gateway:dev", "openshell-gateway dev -"),
            (
                "localhost:5000/o/gateway:1.2",
                "localhost:5000/o/gateway 1.2 -",
            ),
            ("localhost:5000/gateway", "localhost:5000/gateway - -"),
            (
                "ghcr.io/o/gateway@sha256:abc",
                "ghcr.io/o/gateway - sha256:abc",
            ),
            ("gateway:c53ad6d@sha256:abc", "gateway c53ad6d@sha256:abc -"),
        ];
        for (reference, want) in cases {
            let image = ImageRef::parse(reference).unwrap();
            let parts = [image.repository, image.tag, image.digest];
            let parts = parts.map(|p| if p.is_empty() { "-".to_owned() } else { p });
            assert_eq!(parts.join(" "), want, "{reference}");
        }
        for bad in ["", ":tag", "name:", "name@"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn without_the_variable_there_is_no_cluster() {
        if std::env::var_os(KUBECONFIG_ENV).is_none() {
            assert!(Cluster::from_env().unwrap().is_none());
        }
    }

    #[test]
    fn the_chart_is_found() {
        assert!(chart_dir().join("Chart.yaml").is_file());
    }

    #[test]
    fn kubectl_failures_name_the_command_and_quote_its_stderr() {
        let cluster = Cluster::new("/nonexistent/kubeconfig", "openshell-e2e");
        let mut cmd = cluster.kubectl_command(&["get", "pods"]);
        let described = describe(&cmd);
        assert!(
            described.ends_with("--namespace openshell-e2e --request-timeout=30s get pods"),
            "{described}"
        );
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(
            envs.iter().any(|(k, v)| *k == "KUBECONFIG"
                && *v == Some(Path::new("/nonexistent/kubeconfig").as_os_str())),
            "{envs:?}"
        );
        // Whatever kubectl is (or is not) installed here, the error names it.
        if let Err(e) = command::run(&mut cmd, None, Duration::from_secs(30)) {
            assert!(e.to_string().contains("get pods"), "{e}");
        }
    }
}
